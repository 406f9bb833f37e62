package load

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestOpenLoopKeepsItsSchedule: requests go out when due, however slow
// the answers (an open loop), each measured from its due time, and every
// one comes back with the target it sent.
func TestOpenLoopKeepsItsSchedule(t *testing.T) {
	var inFlight, most atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(200 * time.Millisecond) // a slow answer
		inFlight.Add(-1)
		fmt.Fprint(w, r.URL.RawQuery)
	}))
	defer srv.Close()
	s := Constant(50, time.Second) // 50 requests, 20 ms apart
	hits := Open(t.Context(), s, func(i int) Target { return Target{Method: "GET", URL: fmt.Sprintf("%s/?i=%d", srv.URL, i)} }, Options{})
	if len(hits) != len(s) {
		t.Fatalf("%d hits for %d scheduled", len(hits), len(s))
	}
	seen := map[int]bool{}
	for _, h := range hits {
		if h.Code != 200 || string(h.Body) != fmt.Sprintf("i=%d", h.Target) || strings.Contains(h.URL, "#") {
			t.Errorf("hit %+v: want 200 answering its own target", h)
		}
		if h.Took < 200*time.Millisecond || h.Took > 2*time.Second {
			t.Errorf("hit %d took %v from its due time, want the 200 ms answer and little more", h.Seq, h.Took)
		}
		seen[h.Target] = true
	}
	if len(seen) != len(s) {
		t.Errorf("%d distinct targets sent, want %d", len(seen), len(s))
	}
	// A closed loop of one would hold one in flight; on schedule, 200 ms
	// answers every 20 ms overlap about ten deep.
	if m := most.Load(); m < 5 {
		t.Errorf("at most %d requests in flight: the load waited for answers", m)
	}
}

// TestClosedLoopHoldsItsClients: c clients keep c requests in flight.
func TestClosedLoopHoldsItsClients(t *testing.T) {
	var inFlight, most atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		inFlight.Add(-1)
	}))
	defer srv.Close()
	hits := Closed(t.Context(), Target{Method: "GET", URL: srv.URL}, 4, 500*time.Millisecond, Options{})
	if len(hits) < 20 || most.Load() != 4 {
		t.Errorf("%d hits, at most %d in flight; want many, and exactly 4 at once", len(hits), most.Load())
	}
}
