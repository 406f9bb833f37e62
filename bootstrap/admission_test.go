package main_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
)

// TestCPUAdmission: over a real tunnel into the real bootstrap and app,
// an instance running a CPU-bound request refuses a second one (a cpu
// nack, its load hint full) once it has learnt what the kind costs; it
// takes a request whose CPU is too small to matter; and it takes a CPU-bound
// one marked as the router's last try.
func TestCPUAdmission(t *testing.T) {
	// A budget of 0.1% (so the 1 ms floor rules): how much a busy test
	// machine stretches the requests' wall time, which the budget is a
	// share of, cannot then decide the outcome.
	fn := goFunction("app", 30*time.Second, map[string]string{"FERRY_IDLE_LINGER": "5s", "FERRY_CPU_BUDGET": "0.001"})
	fn.MemoryMB = 1769 // one vCPU
	emu := newEmulator(t, fn)
	c, done := newTestRouter(t).dialBack(t, emu, "app", 8)

	// Teach it: /work burns 150 ms of CPU.
	resp, err := get(c, "/work?cpu_ms=150")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	resp.Body.Close()
	if l, ok := c.Load(); !ok || l.InFlight != 0 || l.Full {
		t.Errorf("load after a lone request = %+v, %v; want 0 in flight, not full", l, ok)
	}

	// A long CPU-bound request holds the vCPU (sent as a last try, so that
	// it is taken even if one of the probes below got there first).
	long := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://app/work?cpu_ms=1500", nil)
		req.Header.Set(tunnel.HeaderLastTry, "1")
		resp, err := c.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		long <- err
	}()
	// Until it ends, another CPU-bound request is refused for CPU.
	nacked := false
	for !nacked {
		select {
		case err := <-long:
			t.Fatalf("the long request ended (%v) and no second CPU-bound request was refused beside it", err)
		default:
		}
		resp, err := get(c, "/work?cpu_ms=150&second=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		reason, isNack := tunnel.IsNack(resp)
		if !isNack {
			continue // taken: the long one had not reached the app yet
		}
		nacked = true
		if reason != tunnel.NackCPU {
			t.Errorf("nack reason %q, want %q", reason, tunnel.NackCPU)
		}
		if l, err := tunnel.ParseLoad(resp.Header.Get(tunnel.HeaderLoad)); err != nil || !l.Full || l.InFlight < 1 {
			t.Errorf("nack's load hint %+v (%v), want full with the CPU-bound request in flight", l, err)
		}
	}
	// A request with next to no CPU still fits beside it, once it is the
	// only one in flight: a probe taken above may still be counted for a
	// moment after its answer reached the router (and, with an expected
	// CPU left, rightly keeps the health check out while it is).
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp, err := get(c, "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		l, _ := tunnel.ParseLoad(resp.Header.Get(tunnel.HeaderLoad))
		if l.InFlight <= 1 || time.Now().After(deadline) {
			t.Errorf("a health check beside the CPU-bound request alone: %d, load %+v", resp.StatusCode, l)
			break
		}
		time.Sleep(5 * time.Millisecond) // the earlier probe's release
	}
	// The router's last try is taken whatever it costs.
	req, _ := http.NewRequest("GET", "http://app/work?cpu_ms=20", nil)
	req.Header.Set(tunnel.HeaderLastTry, "1")
	if resp, err := c.RoundTrip(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("last try: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if err := <-long; err != nil {
		t.Errorf("the long request: %v", err)
	}
	c.Shutdown(context.Background())
	sum := summaryOf(t, waitResult(t, done))
	if sum.Nacks < 1 {
		t.Errorf("summary %+v, want the nack counted", sum)
	}
}
