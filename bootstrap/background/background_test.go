package background

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTrackerCounts(t *testing.T) {
	tr := New()
	if _, _, err := tr.Begin(); err != ErrClosed {
		t.Errorf("Begin before Open: %v, want ErrClosed", err)
	}
	tr.Open()
	now := time.Unix(1000, 0)
	tr.now = func() time.Time { return now }

	if _, idle := tr.IdleSince(); !idle || tr.Pending() != 0 {
		t.Fatal("a new tracker has work pending")
	}
	a, actx, err := tr.Begin()
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(100 * time.Millisecond)
	b, _, _ := tr.Begin()
	now = now.Add(100 * time.Millisecond)
	if !tr.End(a) || tr.End(a) {
		t.Error("End: want true once, then false")
	}
	if actx.Err() == nil {
		t.Error("an ended work's context is not cancelled")
	}
	if _, idle := tr.IdleSince(); idle {
		t.Error("idle while work is pending")
	}
	now = now.Add(300 * time.Millisecond)
	tr.End(b)
	select {
	case <-tr.Done():
	default:
		t.Error("no signal when pending work went to none")
	}
	if since, idle := tr.IdleSince(); !idle || !since.Equal(now) {
		t.Errorf("IdleSince = %v, %v; want %v, true", since, idle, now)
	}
	if got := tr.TakeBusy(); got != 500*time.Millisecond {
		t.Errorf("busy %v, want 500ms (from the first Begin to the last End)", got)
	}
	if got := tr.TakeBusy(); got != 0 {
		t.Errorf("busy %v after a TakeBusy, want 0", got)
	}

	// Pending at the drain: cancelled and forgotten.
	c, cctx, _ := tr.Begin()
	now = now.Add(time.Second)
	if n := tr.CancelAll(); n != 1 || cctx.Err() == nil || tr.End(c) || tr.Pending() != 0 {
		t.Errorf("CancelAll = %d; want 1 work cancelled and forgotten", n)
	}
	if got := tr.TakeBusy(); got != time.Second {
		t.Errorf("busy %v, want the second it was pending", got)
	}
	if err := tr.Wait(t.Context()); err != nil {
		t.Errorf("Wait with nothing pending: %v", err)
	}
}

func TestTrackerBounded(t *testing.T) {
	tr := New()
	tr.Open()
	for range MaxPending {
		if _, _, err := tr.Begin(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := tr.Begin(); err != ErrTooMany {
		t.Errorf("Begin beyond MaxPending: %v, want ErrTooMany", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := tr.Wait(ctx); err != context.DeadlineExceeded {
		t.Errorf("Wait with work pending = %v, want the context's error", err)
	}
	if Go(NewContext(t.Context(), tr), func(context.Context) { t.Error("ran beyond MaxPending") }) {
		t.Error("Go beyond MaxPending said it registered")
	}
}

func TestGo(t *testing.T) {
	tr := New()
	tr.Open()
	release, ran := make(chan struct{}), make(chan struct{})
	if !Go(NewContext(t.Context(), tr), func(context.Context) { <-release; close(ran) }) {
		t.Fatal("Go refused")
	}
	if tr.Pending() != 1 {
		t.Errorf("pending %d while the work runs, want 1", tr.Pending())
	}
	close(release)
	<-ran
	if err := tr.Wait(t.Context()); err != nil || tr.Pending() != 0 {
		t.Errorf("after the work: pending %d, %v", tr.Pending(), err)
	}
	// Outside ferry, a plain goroutine.
	done := make(chan struct{})
	Go(t.Context(), func(context.Context) { close(done) })
	<-done
}

// Work left pending when an invocation ends cannot hold the next one.
func TestOpenDropsLeftovers(t *testing.T) {
	tr := New()
	tr.Open()
	_, ctx, _ := tr.Begin()
	tr.Close()
	if _, _, err := tr.Begin(); err != ErrClosed {
		t.Errorf("Begin after Close: %v, want ErrClosed", err)
	}
	if n := tr.Open(); n != 1 || ctx.Err() == nil || tr.Pending() != 0 {
		t.Errorf("Open = %d, pending %d; want the leftover work cancelled and forgotten", n, tr.Pending())
	}
}

func TestHandler(t *testing.T) {
	tr := New()
	tr.Open()
	const secret = "s3cr3t"
	srv := httptest.NewServer(tr.Handler(secret))
	defer srv.Close()
	do := func(method, path string) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		var v struct{ ID string }
		if resp.StatusCode == http.StatusCreated {
			json.NewDecoder(resp.Body).Decode(&v)
			b.WriteString(v.ID)
		}
		return resp, b.String()
	}
	resp, id := do("POST", "/"+secret)
	if resp.StatusCode != http.StatusCreated || id == "" || tr.Pending() != 1 {
		t.Fatalf("POST /secret: %d id %q, pending %d", resp.StatusCode, id, tr.Pending())
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"DELETE", "/" + id, http.StatusNotFound}, // without the secret
		{"POST", "/", http.StatusNotFound},
		{"POST", "/" + secret + "x", http.StatusNotFound},
		{"DELETE", "/" + secret + "/" + id, http.StatusNoContent},
		{"DELETE", "/" + secret + "/" + id, http.StatusNotFound},
		{"DELETE", "/" + secret + "/nope", http.StatusNotFound},
		{"GET", "/" + secret, http.StatusMethodNotAllowed},
		{"POST", "/" + secret + "/7", http.StatusMethodNotAllowed},
	} {
		if resp, _ := do(c.method, c.path); resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	if tr.Pending() != 0 {
		t.Errorf("pending %d after the DELETE, want 0", tr.Pending())
	}
	tr.Close()
	if resp, _ := do("POST", "/"+secret); resp.StatusCode != http.StatusGone {
		t.Errorf("POST between invocations: %d, want 410", resp.StatusCode)
	}
}
