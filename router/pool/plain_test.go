package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// heldLauncher is a fake for invocations whose tunnels have not arrived
// yet: it counts launches, and each runs until the test ends.
type heldLauncher struct {
	mu       sync.Mutex
	launches int
	done     chan struct{}
}

func newHeldLauncher(t *testing.T) *heldLauncher {
	l := &heldLauncher{done: make(chan struct{})}
	t.Cleanup(func() { close(l.done) })
	return l
}

func (l *heldLauncher) Prepare(Launch) (string, func(context.Context) error, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.launches++
	return fmt.Sprint("held-", l.launches), func(context.Context) error { <-l.done; return nil }, nil
}

func (l *heldLauncher) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.launches
}

// acquireNow acquires with a context that ends at once if nothing is free:
// it returns the lease, or nil, and how many launches the call started.
func acquireNow(t *testing.T, p *Pool, l *heldLauncher, plain bool) (*Lease, int) {
	t.Helper()
	before := l.count()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	lease, err := p.Acquire(ctx, nil, plain)
	if err != nil && !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("Acquire: %v", err)
	}
	return lease, l.count() - before
}

// teach records tunnel invocations that took the given requests, and safe
// responses.
func teach(p *Pool, safe int, served ...int64) {
	for _, n := range served {
		p.Ended(10*time.Millisecond, 5*time.Millisecond, 0, n, true)
	}
	p.mu.Lock()
	for range safe {
		p.sharing.response(false, p.cfg.Now())
	}
	p.mu.Unlock()
}

// TestPlainOrTunnel: a request that no live instance can take goes as a
// plain invocation only while the function's tunnel invocations take
// barely more than the request each was started for, its responses have
// been small, and the request itself can travel in a payload.
func TestPlainOrTunnel(t *testing.T) {
	tests := map[string]struct {
		direct    bool
		plain     bool // the request could go plain
		safe      int
		served    []int64
		unsafe    bool // then a response that could not have gone plain
		wantPlain bool
	}{
		"no tunnel has ended yet":        {direct: true, plain: true, safe: 20},
		"tunnels take one request each":  {direct: true, plain: true, safe: 20, served: []int64{1, 1, 1, 1}, wantPlain: true},
		"surplus tunnels took none":      {direct: true, plain: true, safe: 20, served: []int64{1, 0, 1, 1}, wantPlain: true},
		"tunnels are shared":             {direct: true, plain: true, safe: 20, served: []int64{3, 1, 4, 1}},
		"one in four shared pays":        {direct: true, plain: true, safe: 20, served: []int64{1, 1, 1, 2}},
		"too few responses seen":         {direct: true, plain: true, safe: minSafeResponses - 1, served: []int64{1, 1, 1, 1}},
		"a recent response was too big":  {direct: true, plain: true, safe: 20, served: []int64{1, 1, 1, 1}, unsafe: true},
		"the request cannot travel so":   {direct: true, plain: false, safe: 20, served: []int64{1, 1, 1, 1}},
		"plain invocations switched off": {direct: false, plain: true, safe: 20, served: []int64{1, 1, 1, 1}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			l := newHeldLauncher(t)
			p, err := New(Config{Function: "f", Launcher: l, Plain: tt.direct, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			teach(p, tt.safe, tt.served...)
			if tt.unsafe {
				p.mu.Lock()
				p.sharing.response(true, p.cfg.Now())
				for range 20 {
					p.sharing.response(false, p.cfg.Now())
				}
				p.mu.Unlock()
			}
			lease, launched := acquireNow(t, p, l, tt.plain)
			if got := lease != nil && lease.Plain(); got != tt.wantPlain {
				t.Fatalf("plain = %v, want %v (lease %v, %d launched)", got, tt.wantPlain, lease, launched)
			}
			if tt.wantPlain {
				if launched != 0 || p.State().PlainInFlight != 1 || p.State().Stats.Plain != 1 {
					t.Errorf("plain lease launched %d, state %+v", launched, p.State())
				}
				lease.Release()
				if n := p.State().PlainInFlight; n != 0 {
					t.Errorf("%d plain in flight after release", n)
				}
			} else if launched != 1 {
				t.Errorf("%d launches for a request with no instance, want 1", launched)
			}
		})
	}
}

// TestPlainExploresAndHolds: while requests go plain, one in exploreEvery
// still starts a tunnel, so the pool sees if sharing pays again; a plain
// invocation holds a sandbox, so it counts against MaxInstances; a
// response too large to go plain keeps requests on tunnels for
// unsafeHold.
func TestPlainExploresAndHolds(t *testing.T) {
	now := time.Unix(1e9, 0)
	newPool := func(maxInstances int) (*Pool, *heldLauncher) {
		l := newHeldLauncher(t)
		p, err := New(Config{Function: "f", Launcher: l, Plain: true, MaxInstances: maxInstances, Logger: slog.New(slog.DiscardHandler),
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		teach(p, 20, 1, 1, 1, 1)
		return p, l
	}

	p, l := newPool(0)
	for i := range exploreEvery - 1 {
		lease, launched := acquireNow(t, p, l, true)
		if lease == nil || !lease.Plain() || launched != 0 {
			t.Fatalf("request %d: lease %v, %d launched; want plain", i, lease, launched)
		}
		defer lease.Release()
	}
	if lease, launched := acquireNow(t, p, l, true); lease != nil || launched != 1 {
		t.Fatalf("request %d: lease %v, %d launched; want a tunnel launch", exploreEvery, lease, launched)
	}
	// The pending launch covers the next request: it waits for it.
	if lease, launched := acquireNow(t, p, l, true); lease != nil || launched != 0 {
		t.Fatalf("with a launch pending: lease %v, %d launched; want to wait for it", lease, launched)
	}

	p, l = newPool(2)
	for range 2 {
		lease, _ := acquireNow(t, p, l, true)
		if lease == nil || !lease.Plain() {
			t.Fatalf("with room for a sandbox: %v", lease)
		}
		defer lease.Release()
	}
	if lease, launched := acquireNow(t, p, l, true); lease != nil || launched != 0 {
		t.Fatalf("at MaxInstances with plain invocations: lease %v, %d launched; want to wait", lease, launched)
	}

	p, l = newPool(0)
	lease, _ := acquireNow(t, p, l, true)
	lease.Answered(true) // too large for a payload
	lease.Release()
	teach(p, 20)
	now = now.Add(unsafeHold - time.Second)
	if lease, launched := acquireNow(t, p, l, true); lease != nil || launched != 1 {
		t.Fatalf("within %v of a response too large: lease %v, %d launched; want a tunnel launch", unsafeHold, lease, launched)
	}
	p, l = newPool(0)
	lease, _ = acquireNow(t, p, l, true)
	lease.Answered(true)
	lease.Release()
	teach(p, 20)
	now = now.Add(unsafeHold + time.Second)
	if lease, _ := acquireNow(t, p, l, true); lease == nil || !lease.Plain() {
		t.Fatalf("not plain %v after a response too large", unsafeHold)
	}
}
