package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/dialback"
	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
)

// dialBackCarrying invokes function with a dial-back event that carries
// first, and returns the tunnel and the invocation's result.
func (r *testRouter) dialBackCarrying(t *testing.T, emu *lambdaemu.Emulator, function string, first []byte) (*tunnel.Conn, <-chan invokeResult) {
	t.Helper()
	c, done := r.dialBackWith(t, emu, dialback.Payload{Function: function, MaxConcurrency: 8, First: first}.WithLinger(0))
	if !c.Hello().Carried {
		t.Fatal("the hello does not say the bootstrap took the carried request")
	}
	return c, done
}

func claim(c *tunnel.Conn, path string) (*http.Response, error) {
	req, _ := http.NewRequest("GET", "http://app"+path, nil)
	req.Header.Set(tunnel.HeaderClaim, "1")
	return c.RoundTrip(req)
}

// wantWaited reads the sample app's answer to a /work request and fails
// the test unless it is a 200 that waited waitMs (what, if not); it
// returns the body.
func wantWaited(t *testing.T, resp *http.Response, err error, waitMs int, what string) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		WaitMs int `json:"wait_ms"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || got.WaitMs != waitMs {
		t.Fatalf("answered %d %s; want %s", resp.StatusCode, b, what)
	}
	return b
}

// TestCarriedRequest: the request a dial-back event carries is the one the
// router's claim stream gets answered, whatever that stream says of
// itself, streamed as the app writes it, once; the invocation counts it and
// ends on idle as soon as it is answered. One never claimed never runs.
func TestCarriedRequest(t *testing.T) {
	emu := newEmulator(t, goFunction("app", 30*time.Second, nil))
	router := newTestRouter(t)

	t.Run("answered on the claim", func(t *testing.T) {
		c, done := router.dialBackCarrying(t, emu, "app", httpEvent("POST", "/work", "wait_ms=50", nil, nil, "hello"))
		resp, err := claim(c, "/work")
		// The claim itself is a GET of /work, which waits 0 ms.
		b := wantWaited(t, resp, err, 50, "the carried request's response")
		if resp.Header.Get(tunnel.HeaderLoad) == "" {
			t.Errorf("claim's response lacks %s", tunnel.HeaderLoad)
		}
		if resp.ContentLength != int64(len(b)) {
			t.Errorf("claim's response length %d for a %d-byte body whole before the claim; want it said", resp.ContentLength, len(b))
		}
		if again, err := claim(c, "/work"); err == nil {
			io.Copy(io.Discard, again.Body)
			again.Body.Close()
			t.Errorf("a second claim answered %d; want the stream reset, nothing to claim", again.StatusCode)
		}
		if sum := summaryOf(t, waitResult(t, done)); sum.Requests != 1 || sum.Ended != "idle" {
			t.Errorf("summary %+v; want the carried request counted, ended idle", sum)
		}
	})

	t.Run("streamed", func(t *testing.T) {
		c, done := router.dialBackCarrying(t, emu, "app", httpEvent("GET", "/stream", "chunks=3&interval_ms=300", nil, nil, ""))
		resp, err := claim(c, "/stream")
		if err != nil {
			t.Fatal(err)
		}
		firstChunkBeforeLast(t, resp)
		summaryOf(t, waitResult(t, done))
	})

	t.Run("dropped by the router", func(t *testing.T) {
		// The carried request's client left while the invocation
		// started: the router's first stream says so, and is served at
		// once as itself, not held for a claim that will not come.
		c, done := router.dialBackCarrying(t, emu, "app", httpEvent("GET", "/work", "wait_ms=50", nil, nil, ""))
		req, _ := http.NewRequest("GET", "http://app/echo", nil)
		req.Header.Set(tunnel.HeaderDropCarried, "1")
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got struct {
			Path    string      `json:"path"`
			Headers http.Header `json:"headers"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || got.Path != "/echo" {
			t.Fatalf("stream answered %d %s; want its own request's response", resp.StatusCode, b)
		}
		if v := got.Headers.Get(tunnel.HeaderDropCarried); v != "" {
			t.Errorf("the app saw %s: %q; the protocol is the bootstrap's", tunnel.HeaderDropCarried, v)
		}
		if again, err := claim(c, "/work"); err == nil {
			io.Copy(io.Discard, again.Body)
			again.Body.Close()
			t.Errorf("a claim after the drop answered %d; want the stream reset, nothing to claim", again.StatusCode)
		}
		res := waitResult(t, done)
		if sum := summaryOf(t, res); sum.Requests != 1 {
			t.Errorf("summary %+v; want only the stream's request run", sum)
		}
		if !strings.Contains(res.res.LogTail, "the router will not claim the carried request") || strings.Contains(res.res.LogTail, "never claimed") {
			t.Errorf("log does not say the carried request was dropped as the router said (not held for its claim):\n%s", res.res.LogTail)
		}
	})

	t.Run("never claimed", func(t *testing.T) {
		// A router that never claims cannot keep the invocation, billed,
		// until its deadline; the request never runs.
		_, done := router.dialBackCarrying(t, emu, "app", httpEvent("GET", "/work", "wait_ms=10", nil, nil, ""))
		if sum := summaryOf(t, waitResult(t, done)); sum.Requests != 0 || sum.Ended != "idle" {
			t.Errorf("summary %+v; want no request run, ended idle", sum)
		}
	})
}
