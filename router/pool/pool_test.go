package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
)

func TestLaunchesNeeded(t *testing.T) {
	cases := map[string]struct{ waiting, pending, limit, want int }{
		"nothing waiting":          {0, 0, 10, 0},
		"one request, cold":        {1, 0, 10, 1},
		"burst of 200, limit 10":   {200, 0, 10, 20},
		"burst of 201, limit 10":   {201, 0, 10, 21},
		"covered by pending":       {15, 2, 10, 0},
		"partly covered":           {35, 2, 10, 2},
		"limit one":                {7, 3, 1, 4},
		"more pending than needed": {1, 5, 10, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := LaunchesNeeded(c.waiting, c.pending, c.limit); got != c.want {
				t.Errorf("LaunchesNeeded(%d, %d, %d) = %d, want %d", c.waiting, c.pending, c.limit, got, c.want)
			}
		})
	}
}

// TestCover: launches are sized by how many requests an instance takes
// before it says it is full for CPU, learnt from the load hints.
func TestCover(t *testing.T) {
	tests := map[string]struct {
		hints []tunnel.Load
		want  int
	}{
		"no hints: the ceiling":             {nil, 64},
		"I/O-bound, never full":             {[]tunnel.Load{{InFlight: 3}, {InFlight: 7}}, 64},
		"CPU-bound: full beside one":        {repeat(tunnel.Load{InFlight: 1, Full: true}, 20), 1},
		"full at four":                      {repeat(tunnel.Load{InFlight: 4, Full: true}, 20), 4},
		"full alone still covers one":       {repeat(tunnel.Load{InFlight: 0, Full: true}, 20), 1},
		"then room again: cover grows back": {append(repeat(tunnel.Load{InFlight: 1, Full: true}, 20), tunnel.Load{InFlight: 9}), 10},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := New(Config{Function: "f", Launcher: nopLauncher{}})
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tt.hints {
				p.learnCoverLocked(h)
			}
			if got := p.coverLocked(); got != tt.want {
				t.Errorf("cover = %d, want %d", got, tt.want)
			}
		})
	}
}

func repeat(l tunnel.Load, n int) []tunnel.Load {
	out := make([]tunnel.Load, n)
	for i := range out {
		out[i] = l
	}
	return out
}

type nopLauncher struct{}

func (nopLauncher) Prepare(Launch) (string, func(context.Context) error, error) {
	return "", nil, errors.New("no launches in this test")
}

// failingLauncher is a fake for a function whose every invocation ends
// before its tunnel arrives (an init error), after a while if after is
// set, counting the launches and the invocations begun.
type failingLauncher struct {
	after    time.Duration
	mu       sync.Mutex
	launches int
	begun    int
}

func (l *failingLauncher) Prepare(Launch) (string, func(context.Context) error, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.launches++
	return fmt.Sprint("launch-", l.launches), func(context.Context) error {
		l.mu.Lock()
		l.begun++
		l.mu.Unlock()
		time.Sleep(l.after)
		return launchError{"Ferry.AppStartFailed", "init failed: no such server"}
	}, nil
}

func (l *failingLauncher) invoked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.begun
}

func (l *failingLauncher) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.launches
}

func TestFailingFunctionFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &failingLauncher{}
		var classes []string
		p, err := New(Config{Function: "f", Launcher: l, OnLaunchFailure: func(c string) { classes = append(classes, c) }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		_, err = p.Acquire(ctx, nil, false)
		var fe *FailingError
		if !errors.As(err, &fe) || fe.Class != "Ferry.AppStartFailed" {
			t.Fatalf("Acquire = %v, want a FailingError of class Ferry.AppStartFailed", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the waiting request failed after %v, want as soon as %d launches had", took, FailingThreshold)
		}
		if l.count() != FailingThreshold || len(classes) != FailingThreshold {
			t.Errorf("%d launches, %d failures reported before failing; want %d", l.count(), len(classes), FailingThreshold)
		}
		// Failing: requests fail at once; one probe at a time, backed off.
		for range 100 {
			if _, err := p.Acquire(ctx, nil, false); !errors.As(err, &fe) {
				t.Fatalf("while failing: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		// 10 s of requests, 100 of them: the probes' delays grow 1.5x from
		// 100 ms, each within 20% (jitter), so a handful: 7 on average,
		// 9 when the jitter runs low, never one per request.
		if n := l.count() - FailingThreshold; n < 1 || n > 10 {
			t.Errorf("%d probe launches for 100 requests in 10 s, want 1 to 10", n)
		}
		if st := p.State(); st.Failing != "Ferry.AppStartFailed" || st.ConsecutiveFailures < FailingThreshold {
			t.Errorf("State: failing %q after %d consecutive failures", st.Failing, st.ConsecutiveFailures)
		}
		p.Close(context.Background())
		time.Sleep(time.Minute) // a probe still backing off ends
	})
}

// TestBurstThatFailsTogetherBacksOffOnce: twenty launches of a burst whose
// inits all time out together (a crowded host) are one piece of news, not
// twenty: the function fails fast, and the next launch to find out whether
// it works again goes after the first backoff (about 100 ms), not after
// twenty of them (30 s, every request failing meanwhile).
func TestBurstThatFailsTogetherBacksOffOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &failingLauncher{after: 10 * time.Second}
		p, err := New(Config{Function: "f", Launcher: l, MaxConcurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			go p.Acquire(t.Context(), nil, false)
		}
		synctest.Wait()
		if n := l.invoked(); n != 20 {
			t.Fatalf("%d invocations for 20 requests of one slot each, want 20", n)
		}
		// Every init times out at once; the launches that begin after
		// (below the failing threshold's count) fail too, a round later.
		time.Sleep(21 * time.Second)
		synctest.Wait()
		st := p.State()
		if st.Failing == "" || st.ConsecutiveFailures < 20 {
			t.Fatalf("state %+v; want failing after the burst's launches failed", st)
		}
		began := l.invoked()
		var fe *FailingError
		if _, err := p.Acquire(t.Context(), nil, false); !errors.As(err, &fe) {
			t.Fatalf("Acquire = %v while failing; want a FailingError at once", err)
		}
		// Two rounds of failures: the probe goes after 150 ms, within 20%.
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if n := l.invoked(); n != began+1 {
			t.Errorf("%d invocations 200 ms after a request found the function failing, want %d: the probe after two rounds' backoff, not %d failures'",
				n, began+1, st.ConsecutiveFailures)
		}
		p.Close(context.Background())
		time.Sleep(time.Minute) // the probe's invocation ends
	})
}

// A request whose client has already gone launches no invocation (20,000
// reset streams once launched 9 to 19).
func TestCancelledRequestLaunchesNothing(t *testing.T) {
	l := &failingLauncher{}
	p, err := New(Config{Function: "f", Launcher: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Acquire(ctx, nil, false); !errors.Is(err, ErrNoCapacity) || !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire = %v, want ErrNoCapacity from the cancelled context", err)
	}
	if n := l.count(); n != 0 {
		t.Errorf("%d launches for a request already cancelled", n)
	}
}
