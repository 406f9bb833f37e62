package proxy

import (
	"encoding/binary"
	"testing"
)

// frame builds a WebSocket frame with a payload of n bytes, masked or not.
func frame(n int, masked bool) []byte {
	f := []byte{0x82}
	var maskBit byte
	if masked {
		maskBit = 0x80
	}
	switch {
	case n < 126:
		f = append(f, maskBit|byte(n))
	case n < 1<<16:
		f = append(f, maskBit|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, maskBit|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if masked {
		f = append(f, 1, 2, 3, 4)
	}
	return append(f, make([]byte, n)...)
}

// The cursor knows where frames end, however the bytes arrive: whole,
// split inside a header, or a byte at a time.
func TestFrameCursor(t *testing.T) {
	var stream []byte
	var ends []int // offsets at which a frame ends
	for _, f := range [][]byte{frame(0, false), frame(5, false), frame(125, false), frame(126, false), frame(300, true),
		frame(70_000, false), frame(2, true)} {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	isEnd := map[int]bool{0: true}
	for _, e := range ends {
		isEnd[e] = true
	}
	for _, step := range []int{1, 3, 7, 1000, len(stream)} {
		var c frameCursor
		for off := 0; off < len(stream); {
			n := min(step, len(stream)-off)
			c.advance(stream[off : off+n])
			off += n
			if got := c.boundary(); got != isEnd[off] {
				t.Fatalf("in steps of %d, at %d: boundary = %v, want %v", step, off, got, isEnd[off])
			}
		}
	}
}

func TestCloseFrame(t *testing.T) {
	f := closeFrame(1012, "instance draining: reconnect")
	if f[0] != 0x88 || int(f[1]) != len(f)-2 || binary.BigEndian.Uint16(f[2:4]) != 1012 || string(f[4:]) != "instance draining: reconnect" {
		t.Errorf("close frame % x", f)
	}
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'x'
	}
	if f := closeFrame(1001, string(long)); len(f) != 2+125 {
		t.Errorf("a close frame with a long reason is %d bytes, want 127 (a control frame carries 125 at most)", len(f))
	}
}
