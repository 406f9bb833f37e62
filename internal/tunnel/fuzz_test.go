package tunnel

import (
	"bytes"
	"encoding/binary"
	"math"
	"reflect"
	"testing"
	"time"
)

// FuzzHello: any bytes on a new tunnel are read as at most one bounded
// message, never panic, and a hello that validates survives a round trip.
func FuzzHello(f *testing.F) {
	var buf bytes.Buffer
	writeMessage(&buf, Hello{Token: "t", FunctionARN: "fn", RequestID: "r", MaxConcurrency: 64, DeadlineUnixMs: 1_800_000_000_000, MemoryMB: 1769, Fits: 3, LoadStream: true})
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(binary.BigEndian.AppendUint32(nil, 9))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h Hello
		if err := readMessage(bytes.NewReader(data), &h); err != nil {
			return
		}
		if len(data) < 4 || binary.BigEndian.Uint32(data) > MaxMessageSize {
			t.Fatalf("a message over %d bytes was read", MaxMessageSize)
		}
		if h.Validate() != nil {
			return
		}
		h.CheckDeadline(time.Now())
		var out bytes.Buffer
		if err := writeMessage(&out, h); err != nil {
			return // valid, but its JSON grew past the limit (escapes)
		}
		var back Hello
		if err := readMessage(&out, &back); err != nil || back != h {
			t.Fatalf("round trip: %+v -> %+v, %v", h, back, err)
		}
	})
}

// FuzzParseLoad: a load hint that parses is one the router can place by:
// counts within the stream limit, a CPU share in 0..1, time left not
// negative; and it survives formatting.
func FuzzParseLoad(f *testing.F) {
	for _, s := range []string{"inflight=3; cpu=0.42; full=0; left_ms=12000; room=2", "inflight=0", "cpu=NaN", "inflight=-1", "room=-1", "left_ms=-5", "full=2", "x=1", "room=0; room_in_us=34500", "room=1; ahead_us=45000", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLoad(s)
		if err != nil {
			return
		}
		switch {
		case l.InFlight < 0 || l.InFlight > MaxStreamsLimit:
			t.Fatalf("%q: in flight %d", s, l.InFlight)
		case math.IsNaN(l.CPU) || l.CPU < 0 || l.CPU > 1:
			t.Fatalf("%q: cpu %v", s, l.CPU)
		case l.LeftMs < 0:
			t.Fatalf("%q: left %d ms", s, l.LeftMs)
		case l.Room < -1 || l.Room > MaxStreamsLimit:
			t.Fatalf("%q: room %d", s, l.Room)
		case l.RoomIn < 0 || l.RoomIn > maxRoomIn:
			t.Fatalf("%q: room in %v", s, l.RoomIn)
		case l.Ahead < 0 || l.Ahead > maxRoomIn:
			t.Fatalf("%q: ahead %v", s, l.Ahead)
		}
		back, err := ParseLoad(l.String())
		if err != nil {
			t.Fatalf("%q formats as %q, which does not parse: %v", s, l.String(), err)
		}
		back.CPU, l.CPU = math.Round(back.CPU*100), math.Round(l.CPU*100) // formatted to two places
		if !reflect.DeepEqual(back, l) {
			t.Fatalf("%q: %+v formats and parses as %+v", s, l, back)
		}
	})
}

// FuzzRedeem: no string but a token this issuer minted for this function
// redeems, and none panics.
func FuzzRedeem(f *testing.F) {
	iss, err := NewIssuer(make([]byte, 32), time.Minute, nil)
	if err != nil {
		f.Fatal(err)
	}
	tok, _, _ := iss.Mint("fn")
	f.Add(tok)
	f.Add("")
	f.Add("AAAA")
	f.Add(tok[:len(tok)-1] + "A")
	f.Fuzz(func(t *testing.T, s string) {
		iss, _ := NewIssuer(make([]byte, 32), time.Minute, nil)
		if _, err := iss.Redeem(s, "fn"); err == nil {
			t.Fatalf("%q redeemed on an issuer that minted nothing", s)
		}
	})
}
