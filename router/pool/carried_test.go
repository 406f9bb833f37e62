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
		conn := newFakeConn(ids[1], 4)
		conn.carried = true
		p.Add(conn)
		if got := <-first; got.err != nil || !got.lease.Claim() {
			t.Fatalf("Acquire = %+v, %v; want a claim on the second launch's instance", got.lease, got.err)
		} else {
			got.lease.Release()
		}
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

// TestCarriedRequestWhoseClientLeft: the instance that joins for a request
// whose client left is not held for it.
func TestCarriedRequestWhoseClientLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		ctx, cancel := context.WithCancel(t.Context())
		first := acquireCarriable(ctx, p, `{}`)
		synctest.Wait()
		cancel()
		if got := <-first; got.err == nil {
			t.Fatalf("Acquire = %+v after its client left; want an error", got.lease)
		}
		conn := newFakeConn(l.ids()[0], 4)
		conn.carried = true
		p.Add(conn)
		synctest.Wait()
		if !conn.wasShutdown() {
			t.Error("instance kept with nothing to claim and nothing waiting; want it closed as surplus")
		}
	})
}
