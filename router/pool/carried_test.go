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
		l, err := p.AcquireCarriable(ctx, nil, false, false, func() ([]byte, error) { return []byte(body), nil })
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

// TestCarriedRequestWhoseLaunchFails: an invocation that ends without
// its tunnel (Lambda refused it, or it ran and never dialled back) never
// ran the request it carried (the bootstrap runs it only when claimed):
// the request goes back to the head of the queue, for the next launch.
func TestCarriedRequestWhoseLaunchFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		first := acquireCarriable(t.Context(), p, `{}`)
		synctest.Wait()
		l.end(l.ids()[0], errors.New("Ferry.TunnelFailed"))
		time.Sleep(time.Second) // the next launch's failure backoff
		synctest.Wait()
		ids := l.ids()
		if len(ids) != 2 || string(l.spec(ids[1]).First) != `{}` {
			t.Fatalf("launches %v (second carrying %q); want a second launch carrying the request", ids, l.spec(ids[len(ids)-1]).First)
		}
		joinCarried(t, p, ids[1], first)
	})
}

// TestCarriedRequestWhoseClientLeft: a request that stops waiting while
// its launch carries it is answered at once (the bootstrap runs a carried
// request only when the router claims it, and it is not claimed): the
// instance that comes is closed as surplus, and a launch that fails does
// not queue it again.
func TestCarriedRequestWhoseClientLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		for _, joins := range []bool{true, false} {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
			first := acquireCarriable(ctx, p, `{}`)
			if got := <-first; !errors.Is(got.err, ErrNoCapacity) {
				t.Fatalf("Acquire = %+v, %v when its wait ended; want ErrNoCapacity", got.lease, got.err)
			}
			cancel()
			ids := l.ids()
			id := ids[len(ids)-1]
			if !joins {
				l.end(id, errors.New("Ferry.TunnelFailed"))
				time.Sleep(time.Second)
				if now := l.ids(); len(now) != len(ids) {
					t.Errorf("launches %v; want none for a request that stopped waiting", now)
				}
				continue
			}
			conn := newFakeConn(id, 4)
			conn.carried = true
			p.Add(conn)
			synctest.Wait()
			if !conn.wasShutdown() {
				t.Error("instance kept with nothing to claim and nothing waiting; want it closed as surplus")
			}
		}
	})
}

// TestInstanceWhoseCarriedRequestLeftServesWhatWaits: a request whose
// client left while its launch carried it is never claimed; the instance
// that comes serves the next waiting request, on a stream that says to
// drop the carried one, so the bootstrap does not hold it for a claim.
func TestInstanceWhoseCarriedRequestLeftServesWhatWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		if got := <-acquireCarriable(ctx, p, `{"a":1}`); !errors.Is(got.err, ErrNoCapacity) {
			t.Fatalf("A = %+v, %v when its wait ended; want ErrNoCapacity", got.lease, got.err)
		}
		b := acquireCarriable(t.Context(), p, `{"b":2}`)
		synctest.Wait()
		if ids := l.ids(); len(ids) != 1 {
			t.Fatalf("launches %v; want B covered by A's launch", ids)
		}
		conn := newFakeConn(l.ids()[0], 4)
		conn.carried = true
		p.Add(conn)
		got := <-b
		if got.err != nil || got.lease.Claim() || got.lease.Conn() != Conn(conn) || !got.lease.DropCarried() {
			t.Fatalf("B = %+v, %v; want a stream on A's launch's instance that says to drop what it carried", got.lease, got.err)
		}
		got.lease.Release()
	})
}
