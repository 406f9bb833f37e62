package dialback

import (
	"reflect"
	"testing"
)

// FuzzParse: any invoke payload is a dial-back, a direct invocation, or
// an error, never a panic; a dial-back that parses survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"ferry":{"v":1,"router":"127.0.0.1:8443","token":"t","pin":"sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","function":"fn","max_concurrency":8,"linger_us":1500}}`))
	f.Add([]byte(`{"version":"2.0","rawPath":"/"}`))
	f.Add([]byte(`{"ferry":null}`))
	f.Add([]byte(`{"ferry":{"v":1,"linger_ms":-1}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, event []byte) {
		p, ok, err := Parse(event)
		if !ok || err != nil {
			return
		}
		if d, on := p.Linger(); on && d < 0 {
			t.Fatalf("negative linger %v", d)
		}
		b, err := Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		back, ok, err := Parse(b)
		if !ok || err != nil || !reflect.DeepEqual(back, p) {
			t.Fatalf("round trip: %+v -> %s -> %+v, %v, %v", p, b, back, ok, err)
		}
	})
}
