package serve

import (
	"net/http"
	"reflect"
	"testing"
)

func TestStripProtocol(t *testing.T) {
	cases := map[string]struct{ in, want http.Header }{
		"app's own headers kept": {
			http.Header{"Content-Type": {"text/plain"}, "X-Ferry": {"ok"}},
			http.Header{"Content-Type": {"text/plain"}, "X-Ferry": {"ok"}},
		},
		"nack and load from the app dropped": {
			http.Header{"Ferry-Nack": {"cpu"}, "Ferry-Load": {"inflight=0"}, "Content-Type": {"text/plain"}},
			http.Header{"Content-Type": {"text/plain"}},
		},
		"any case": {
			http.Header{"ferry-nack": {"cpu"}, "FERRY-LAST-TRY": {"1"}},
			http.Header{},
		},
		"trailers set under the prefix dropped": {
			http.Header{http.TrailerPrefix + "Ferry-Nack": {"cpu"}, http.TrailerPrefix + "X-Sum": {"1"}},
			http.Header{http.TrailerPrefix + "X-Sum": {"1"}},
		},
		"declared trailers filtered": {
			http.Header{"Trailer": {"Ferry-Nack, X-Sum", "Ferry-Load"}},
			http.Header{"Trailer": {"X-Sum"}},
		},
		"only protocol trailers declared": {
			http.Header{"Trailer": {"Ferry-Nack"}},
			http.Header{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			stripProtocol(tc.in)
			if !reflect.DeepEqual(tc.in, tc.want) {
				t.Errorf("got %v, want %v", tc.in, tc.want)
			}
		})
	}
}
