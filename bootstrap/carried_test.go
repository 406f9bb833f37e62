package main_test

import (
	"encoding/json"
	"io"
	"net/http"
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
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got struct {
			WaitMs int `json:"wait_ms"`
		}
		// The claim itself is a GET of /work, which waits 0 ms.
		if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || got.WaitMs != 50 {
			t.Fatalf("claim answered %d %s; want the carried request's response", resp.StatusCode, b)
		}
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

	t.Run("never claimed", func(t *testing.T) {
		// A router that never claims cannot keep the invocation, billed,
		// until its deadline; the request never runs.
		_, done := router.dialBackCarrying(t, emu, "app", httpEvent("GET", "/work", "wait_ms=10", nil, nil, ""))
		if sum := summaryOf(t, waitResult(t, done)); sum.Requests != 0 || sum.Ended != "idle" {
			t.Errorf("summary %+v; want no request run, ended idle", sum)
		}
	})
}
