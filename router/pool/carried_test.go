package pool

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// acquireCarriable starts an AcquireCarriable of a request whose event is
// body, and returns where its outcome arrives.
func acquireCarriable(ctx context.Context, p *Pool, body string) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, err := p.AcquireCarriable(ctx, nil, false, func() ([]byte, error) { return []byte(body), nil })
		ch <- acquired{l, err}
	}()
	return ch
}

// joinCarried lets launch id's instance join saying it runs the request
// its launch carried, and holds the request waiting on ch to a claim on
// it, which it releases.
func joinCarried(t *testing.T, p *Pool, id string, ch <-chan acquired) {
	t.Helper()
	conn := newFakeConn(id, 4)
	conn.carried = true
	p.Add(conn)
	got := <-ch
	if got.err != nil || !got.lease.Claim() || got.lease.Conn() != Conn(conn) {
		t.Fatalf("Acquire = %+v, %v; want a claim on the instance of launch %s", got.lease, got.err, id)
	}
	got.lease.Release()
}

// notRun is a launch failure Lambda said never ran the function (a
// throttle, say), as invoke.Error reports it.
type notRun struct{}

func (notRun) Error() string    { return "throttled" }
func (notRun) NotStarted() bool { return true }

// TestLaunchCarriesItsRequest: the invocation started for a request that
// can travel in an event carries it; the instance that joins saying it runs
// it gives the request a claim on it, with its slot counted, and no other
// request takes that slot.
func TestLaunchCarriesItsRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 1})
		first := acquireCarriable(t.Context(), p, `{"a":1}`)
		synctest.Wait()
		ids := l.ids()
		if len(ids) != 1 || string(l.spec(ids[0]).First) != `{"a":1}` {
			t.Fatalf("launches %v carrying %q; want one carrying the request's event", ids, l.spec(ids[0]).First)
		}
		// A second request meanwhile: the first launch's slot is the
		// carried request's, so it needs a launch of its own.
		second := acquireCarriable(t.Context(), p, `{"b":2}`)
		synctest.Wait()
		if ids = l.ids(); len(ids) != 2 || string(l.spec(ids[1]).First) != `{"b":2}` {
			t.Fatalf("launches %v; want a second one carrying the second request", ids)
		}
		conn := newFakeConn(ids[0], 1)
		conn.carried = true
		p.Add(conn)
		got := <-first
		if got.err != nil || !got.lease.Claim() || got.lease.Conn() != Conn(conn) {
			t.Fatalf("first = %+v, %v; want a claim on the instance its launch started", got.lease, got.err)
		}
		if s := p.State(); s.Instances[0].InFlight != 1 || s.Stats.Carried != 2 {
			t.Errorf("state %+v; want the claim in flight, 2 requests carried", s)
		}
		select {
		case g := <-second:
			t.Fatalf("second request placed (%+v, %v) on an instance whose one slot its carried request holds", g.lease, g.err)
		default:
		}
		got.lease.Release()
	})
}

// TestInstanceThatCannotCarryGetsTheRequestAsAStream: a bootstrap that
// predates carrying ignores the event's request and does not say it runs
// it; the request is sent to it as an ordinary stream, first.
func TestInstanceThatCannotCarryGetsTheRequestAsAStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		first := acquireCarriable(t.Context(), p, `{}`)
		synctest.Wait()
		p.Add(newFakeConn(l.ids()[0], 4))
		got := <-first
		if got.err != nil || got.lease.Claim() || got.lease.Conn() == nil {
			t.Fatalf("Acquire = %+v, %v; want an ordinary lease", got.lease, got.err)
		}
		got.lease.Release()
	})
}

// TestCarriedRequestWhoseLaunchFails: Lambda refusing the invocation (it
// never ran, or its runtime failed before reading the event) puts the
// request back at the head of the queue, for the next launch to carry.
func TestCarriedRequestWhoseLaunchFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		first := acquireCarriable(t.Context(), p, `{}`)
		synctest.Wait()
		l.end(l.ids()[0], notRun{})
		time.Sleep(time.Second) // the next launch's failure backoff
		synctest.Wait()
		ids := l.ids()
		if len(ids) != 2 || string(l.spec(ids[1]).First) != `{}` {
			t.Fatalf("launches %v (second carrying %q); want a second launch carrying the request", ids, l.spec(ids[len(ids)-1]).First)
		}
		joinCarried(t, p, ids[1], first)
	})
}

// TestCarriedRequestLostWithItsInvocation: an invocation that ran and
// ended without dialling back fails the request it carried, never sending
// it again (the app may have run it).
func TestCarriedRequestLostWithItsInvocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		first := acquireCarriable(t.Context(), p, `{}`)
		synctest.Wait()
		l.end(l.ids()[0], errors.New("Ferry.TunnelFailed"))
		got := <-first
		var lostErr *CarriedLostError
		if !errors.As(got.err, &lostErr) {
			t.Fatalf("Acquire = %+v, %v; want CarriedLostError", got.lease, got.err)
		}
		synctest.Wait()
		if ids := l.ids(); len(ids) != 1 {
			t.Errorf("launches %v; want none after the one that carried the lost request", ids)
		}
	})
}

// TestCarriedRequestOutlivesTheQueueTimeout: a request its launch carries
// may run whatever happens to its client, so the queue's timeout does not
// answer it (a 503 would invite the client to send it again): it waits for
// its instance and claims its response.
func TestCarriedRequestOutlivesTheQueueTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		first := acquireCarriable(ctx, p, `{}`)
		time.Sleep(time.Second)
		select {
		case got := <-first:
			t.Fatalf("Acquire = %+v, %v at the queue timeout; want it to wait for the launch carrying it", got.lease, got.err)
		default:
		}
		joinCarried(t, p, l.ids()[0], first)
	})
}

// TestCarriedRequestThatEndsItsInvocation: a request that ends the
// invocation carrying it (a crash) fails alone, as in a plain invocation:
// however many do, the function is not taken to be failing.
func TestCarriedRequestThatEndsItsInvocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		for i := range FailingThreshold + 1 {
			got := acquireCarriable(t.Context(), p, `{}`)
			synctest.Wait()
			ids := l.ids()
			l.end(ids[len(ids)-1], errors.New("Runtime.ExitError"))
			var lost *CarriedLostError
			if g := <-got; !errors.As(g.err, &lost) {
				t.Fatalf("request %d: Acquire = %+v, %v; want CarriedLostError", i, g.lease, g.err)
			}
		}
		if s := p.State(); s.Failing != "" || s.ConsecutiveFailures != 0 {
			t.Errorf("state %+v; want the function not failing", s)
		}
	})
}
