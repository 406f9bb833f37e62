package tunnel

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fakeRefusingPeer is a FAKE HTTP/2 server, written with x/net's Framer,
// because a real http2.Server cannot be made to refuse one chosen stream or
// to send GOAWAY below a stream the client has already opened. It waits for
// streams 1 and 3, refuses 1 with RST_STREAM(REFUSED_STREAM), and sends
// GOAWAY with last stream id 0, so stream 3 was never processed.
func fakeRefusingPeer(t *testing.T, nc net.Conn) {
	t.Helper()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil {
		t.Errorf("fake peer: reading preface: %v", err)
		return
	}
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 10})
	seen := map[uint32]bool{}
	for !(seen[1] && seen[3]) {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Errorf("fake peer: %v", err)
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			seen[f.StreamID] = true
		}
	}
	fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
	fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	io.Copy(io.Discard, nc)
}

// TestUnprocessedMessages produces each "never processed" failure from a
// real x/net ClientConn, so an x/net upgrade that renames its errors fails
// here instead of silently turning safe retries into 502s.
func TestUnprocessedMessages(t *testing.T) {
	cc := clientConnTo(t, func(nc net.Conn) { fakeRefusingPeer(t, nc) })
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			req, _ := http.NewRequest("POST", "http://app/", bytes.NewReader([]byte("x")))
			_, err := cc.RoundTrip(req)
			errs <- err
		}()
		// Streams 1 then 3, in order: the second once the first is open
		// (the peer answers nothing until it has both).
		for deadline := time.Now().Add(5 * time.Second); i == 0 && cc.State().StreamsActive < 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("stream 1 never opened: %+v", cc.State())
			}
		}
	}
	for range 2 {
		select {
		case err := <-errs:
			if !Unprocessed(err) {
				t.Errorf("Unprocessed(%v) = false, want true", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("round trip never failed")
		}
	}
	req, _ := http.NewRequest("GET", "http://app/", nil)
	if _, err := cc.RoundTrip(req); !Unprocessed(err) {
		t.Errorf("after GOAWAY: Unprocessed(%v) = false, want true", err)
	}
}

// TestUnprocessedWhenClosedBeforeTheFirstStream: a connection whose peer
// goes away before the first stream is sent on it (an instance that dies
// right after its hello) fails that stream unsent, which is safe to retry.
func TestUnprocessedWhenClosedBeforeTheFirstStream(t *testing.T) {
	cc := clientConnTo(t, func(nc net.Conn) {
		preface := make([]byte, len(http2.ClientPreface))
		io.ReadFull(nc, preface)
		http2.NewFramer(nc, nc).WriteSettings()
	})
	for deadline := time.Now().Add(5 * time.Second); !cc.State().Closed; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the connection never closed: %+v", cc.State())
		}
	}
	req, _ := http.NewRequest("GET", "http://app/", nil)
	if _, err := cc.RoundTrip(req); err == nil || !Unprocessed(err) {
		t.Errorf("Unprocessed(%v) = false, want true", err)
	}
}

// clientConnTo is an x/net ClientConn over loopback TCP to a peer that
// serve plays on the accepted connection, closed when serve returns.
func clientConnTo(t *testing.T, serve func(net.Conn)) *http2.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		serve(nc)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(nc)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}
