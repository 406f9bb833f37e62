package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// A streamed body can be sent again while no try has read past its kept
// head (a stream refused at once); once one has, never; and a try left
// for another reads nothing more.
func TestStreamedBodyReplay(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), (replayLimit+5000)/10)
	b, err := newReplayBody(io.NopCloser(bytes.NewReader(body)))
	if err != nil || !b.streams() {
		t.Fatalf("newReplayBody: %v, streams %v; want a streamed body", err, b.streams())
	}
	first := b.attempt()
	if _, err := io.ReadFull(first, make([]byte, 1000)); err != nil { // within the head
		t.Fatal(err)
	}
	first.Close()
	if !b.replayable() {
		t.Fatal("a try that read only the kept head left the body not replayable")
	}
	second := b.attempt()
	if _, err := first.Read(make([]byte, replayLimit+10)); err == nil {
		// The first try's head is its own; past it, it must not read.
		if _, err := io.ReadAll(first); !errors.Is(err, errTryAbandoned) {
			t.Errorf("the abandoned try read on: %v", err)
		}
	}
	got, err := io.ReadAll(second)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the second try read %d bytes (%v), want the whole %d-byte body", len(got), err, len(body))
	}
	if b.replayable() {
		t.Error("a try that read past the head left the body replayable")
	}
}

// A body that fits is kept whole and sent again as often as needed.
func TestSmallBodyReplay(t *testing.T) {
	b, err := newReplayBody(io.NopCloser(bytes.NewReader([]byte("small"))))
	if err != nil || b.streams() {
		t.Fatalf("newReplayBody: %v, streams %v", err, b.streams())
	}
	for range 3 {
		if got, _ := io.ReadAll(b.attempt()); string(got) != "small" || !b.replayable() {
			t.Fatalf("try read %q, replayable %v", got, b.replayable())
		}
	}
}
