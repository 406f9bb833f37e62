package pool

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
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

// TestOverdueCarriedRequestIsTakenBack: a carried request whose launch is
// slower than the slowest recent one (a sandbox starting on a crowded
// host) runs on an instance that frees a slot meanwhile; the launch then
// joins with nothing to claim, and serves what waits (its streams saying
// the carried request is to be dropped), or closes as surplus. A launch
// not yet overdue keeps its request.
func TestOverdueCarriedRequestIsTakenBack(t *testing.T) {
	const lead = 10 * time.Millisecond
	// start puts request A on the instance of launch-1, joined after
	// lead (so launches are taken to need that long), and request B,
	// which finds A's instance full, on launch-2.
	start := func(t *testing.T) (p *Pool, l *fakeLauncher, conn1 *fakeConn, a *Lease, b <-chan acquired) {
		p, l = newTestPool(t, Config{MaxConcurrency: 1})
		first := acquireCarriable(t.Context(), p, `{"a":1}`)
		synctest.Wait()
		time.Sleep(lead)
		conn1 = newFakeConn(l.ids()[0], 1)
		conn1.carried = true
		p.Add(conn1)
		got := <-first
		if got.err != nil || !got.lease.Claim() {
			t.Fatalf("A = %+v, %v; want a claim", got.lease, got.err)
		}
		b = acquireCarriable(t.Context(), p, `{"b":2}`)
		synctest.Wait()
		if ids := l.ids(); len(ids) != 2 || string(l.spec(ids[1]).First) != `{"b":2}` {
			t.Fatalf("launches %v; want launch-2 carrying B", ids)
		}
		return p, l, conn1, got.lease, b
	}

	t.Run("overdue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p, l, conn1, a, b := start(t)
			time.Sleep(2 * lead) // launch-2 is overdue
			a.Release()
			got := <-b
			if got.err != nil || got.lease.Claim() || got.lease.Conn() != Conn(conn1) || got.lease.DropCarried() {
				t.Fatalf("B = %+v, %v; want an ordinary stream on the freed instance", got.lease, got.err)
			}
			if s := p.State(); s.Stats.TakenBack != 1 {
				t.Errorf("taken back %d; want 1", s.Stats.TakenBack)
			}
			// C waits on launch-2, which no longer carries anything it
			// needs to claim: no new launch.
			c := acquireCarriable(t.Context(), p, `{"c":3}`)
			synctest.Wait()
			if ids := l.ids(); len(ids) != 2 {
				t.Fatalf("launches %v; want C covered by launch-2", ids)
			}
			conn2 := newFakeConn(l.ids()[1], 1)
			conn2.carried = true
			p.Add(conn2)
			gotC := <-c
			if gotC.err != nil || gotC.lease.Claim() || gotC.lease.Conn() != Conn(conn2) || !gotC.lease.DropCarried() {
				t.Fatalf("C = %+v, %v; want a stream on launch-2's instance that says to drop what it carried", gotC.lease, gotC.err)
			}
			gotC.lease.Release()
			got.lease.Release()
		})
	})

	t.Run("overdue, nothing else waits", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p, l, conn1, a, b := start(t)
			time.Sleep(2 * lead)
			a.Release()
			got := <-b
			if got.err != nil || got.lease.Conn() != Conn(conn1) {
				t.Fatalf("B = %+v, %v; want the freed instance", got.lease, got.err)
			}
			conn2 := newFakeConn(l.ids()[1], 1)
			conn2.carried = true
			p.Add(conn2)
			synctest.Wait()
			if !conn2.wasShutdown() {
				t.Error("launch-2's instance kept with nothing to claim and nothing waiting; want it closed as surplus")
			}
			got.lease.Release()
		})
	})

	t.Run("nacked by the freed instance", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p, l := newTestPool(t, Config{MaxConcurrency: 1})
			first := acquireCarriable(t.Context(), p, `{"a":1}`)
			synctest.Wait()
			time.Sleep(lead)
			conn1 := newFakeConn(l.ids()[0], 1)
			conn1.carried = true
			p.Add(conn1)
			a := (<-first).lease
			conn1.hint(tunnel.Load{At: time.Now(), Full: true}) // said before B came
			// B was refused by A's instance: its retry avoids it, and
			// rides on launch-2.
			b := make(chan acquired, 1)
			go func() {
				l, err := p.AcquireCarriable(t.Context(), a, false, false, func() ([]byte, error) { return []byte(`{"b":2}`), nil })
				b <- acquired{l, err}
			}()
			synctest.Wait()
			time.Sleep(2 * lead)
			a.Release()
			synctest.Wait()
			select {
			case got := <-b:
				t.Fatalf("B = %+v, %v; want it kept off the instance that refused it, which has said nothing since", got.lease, got.err)
			default:
			}
			// The instance says something new: B may go there now.
			conn1.hint(tunnel.Load{At: time.Now(), Room: 1})
			p.mu.Lock()
			p.dispatchLocked()
			p.mu.Unlock()
			got := <-b
			if got.err != nil || got.lease.Conn() != Conn(conn1) {
				t.Fatalf("B = %+v, %v; want the instance that has spoken since it refused B", got.lease, got.err)
			}
			got.lease.Release()
		})
	})

	t.Run("not overdue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p, l, _, a, b := start(t)
			time.Sleep(lead / 2)
			a.Release()
			synctest.Wait()
			select {
			case got := <-b:
				t.Fatalf("B = %+v, %v; want it left to its launch, about to join", got.lease, got.err)
			default:
			}
			conn2 := newFakeConn(l.ids()[1], 1)
			conn2.carried = true
			p.Add(conn2)
			got := <-b
			if got.err != nil || !got.lease.Claim() || got.lease.Conn() != Conn(conn2) {
				t.Fatalf("B = %+v, %v; want a claim on its launch's instance", got.lease, got.err)
			}
			if s := p.State(); s.Stats.TakenBack != 0 {
				t.Errorf("taken back %d; want 0", s.Stats.TakenBack)
			}
			got.lease.Release()
		})
	})
}
