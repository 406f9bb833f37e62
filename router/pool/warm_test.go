package pool

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestWarmInstances: a pool with a minimum launches it at once, asking for
// warm instances; keeps them though no request comes; serves a request on
// one without a launch; replaces each before its deadline's drain; replaces
// one that ends early, after a backoff; and closes them when the minimum
// drops.
func TestWarmInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		p.SetMinInstances(2)
		synctest.Wait()
		ids := l.ids()
		if len(ids) != 2 {
			t.Fatalf("launches %v for a minimum of 2, want 2", ids)
		}
		conns := map[string]*fakeConn{}
		join := func(id string) *fakeConn {
			if !l.spec(id).Warm {
				t.Errorf("launch %s asked %+v, want a warm instance", id, l.spec(id))
			}
			c := newFakeConn(id, 4)
			conns[id] = c
			p.Add(c)
			return c
		}
		for _, id := range ids {
			join(id)
		}
		synctest.Wait()
		st := p.State()
		if len(st.Instances) != 2 || !st.Instances[0].Warm || !st.Instances[1].Warm || st.Stats.Surplus != 0 || st.MinInstances != 2 {
			t.Fatalf("State = %+v; want the 2 warm instances kept, none closed as surplus", st)
		}

		// A request after a silence finds one: no launch.
		time.Sleep(30 * time.Second)
		lease, err := p.Acquire(t.Context(), nil, false)
		if err != nil || conns[lease.Conn().Claims().ID] == nil {
			t.Fatalf("Acquire after a silence = %v, %v; want a warm instance", lease, err)
		}
		lease.Release()
		if n := len(l.ids()); n != 2 {
			t.Errorf("%d launches after a request met a warm instance, want still 2", n)
		}

		// Each has a minute; they are replaced about the drain margin (6 s
		// for a minute's timeout) plus the launch lead (3 s until seen)
		// plus a second before their deadline: at 10 s left, not at 12 s.
		time.Sleep(18 * time.Second) // 12 s left
		synctest.Wait()
		if n := len(l.ids()); n != 2 {
			t.Fatalf("%d launches with 12 s left, want no replacement yet", n)
		}
		time.Sleep(3 * time.Second) // 9 s left
		synctest.Wait()
		ids = l.ids()
		if len(ids) != 4 {
			t.Fatalf("launches %v with 9 s left, want 2 replacements", ids)
		}
		old := []*fakeConn{conns[ids[0]], conns[ids[1]]}
		fresh := []*fakeConn{join(ids[2]), join(ids[3])}
		for _, c := range old {
			c.end() // at their drain, as due
		}
		synctest.Wait()
		if n := len(l.ids()); n != 4 {
			t.Errorf("%d launches after the old instances ended as due, want 4: %+v", n, p.State())
		}

		// One ends long before its deadline (a crash): it is replaced, once,
		// after a backoff.
		fresh[0].end()
		synctest.Wait()
		if n := len(l.ids()); n != 4 {
			t.Errorf("%d launches at once after a warm instance died, want the replacement after a backoff", n)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		ids = l.ids()
		if len(ids) != 5 {
			t.Fatalf("launches %v 2 s after a warm instance died, want one replacement", ids)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := len(l.ids()); n != 5 {
			t.Errorf("%d launches while the replacement is pending, want 5", n)
		}
		join(ids[4])

		// The minimum drops: the warm instances beyond it are closed.
		p.SetMinInstances(1)
		synctest.Wait()
		closed := 0
		for _, c := range []*fakeConn{fresh[1], conns[ids[4]]} {
			if c.wasShutdown() {
				closed++
			}
		}
		if closed != 1 {
			t.Errorf("%d of 2 warm instances closed for a minimum of 1, want 1", closed)
		}
		p.SetMinInstances(0)
		synctest.Wait()
		if !fresh[1].wasShutdown() || !conns[ids[4]].wasShutdown() {
			t.Error("a warm instance outlived a minimum of 0")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(l.ids()); n != 5 {
			t.Errorf("%d launches after the minimum went to 0, want none more", n)
		}
		p.Close(context.Background())
	})
}

// TestWarmInstanceEndingEarlyBacksOff: warm instances that keep ending
// soon after they join (a bootstrap that ignores warm, an app that dies)
// are relaunched ever more slowly, never in a loop, whatever the timeout.
func TestWarmInstanceEndingEarlyBacksOff(t *testing.T) {
	for _, c := range []struct {
		name          string
		timeout, ends time.Duration
	}{
		{"a minute's timeout, ending at once", time.Minute, 0},
		{"a 6 s timeout, ending after 1 s", 6 * time.Second, time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, l := newTestPool(t, Config{MaxConcurrency: 4})
				p.SetMinInstances(1)
				joined := joinWarm(p, l, 2*time.Minute, c.timeout, c.ends, nil)
				// Backoffs of 1, 2, 4, 8, 16, 32, 60, 60 s: about 8 in 2 minutes.
				if joined < 5 || joined > 10 {
					t.Errorf("%d warm launches in 2 minutes of instances ending early, want about 8: relaunched, with a backoff", joined)
				}
				p.SetMinInstances(0)
			})
		})
	}
}

// joinWarm lets each launch join as it comes, for d: an instance with
// timeout that ends after ends. Between launches it calls check, if set,
// with the time since it began. It returns how many joined.
func joinWarm(p *Pool, l *fakeLauncher, d, timeout, ends time.Duration, check func(since time.Duration)) int {
	start := time.Now()
	joined := 0
	for time.Since(start) < d {
		synctest.Wait()
		if ids := l.ids(); len(ids) > joined {
			conn := newFakeConn(ids[joined], 4)
			conn.deadline = time.Now().Add(timeout)
			joined++
			p.Add(conn)
			time.AfterFunc(ends, conn.end)
			continue
		}
		if check != nil {
			check(time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return joined
}

// TestWarmShortTimeout: a function whose timeout is shorter than the usual
// replacement lead has each warm instance replaced half-way through, not
// as it joins, and the minimum held throughout.
func TestWarmShortTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		p.SetMinInstances(1)
		// Each ends at its drain, a second before its deadline.
		joined := joinWarm(p, l, 30*time.Second, 6*time.Second, 5*time.Second, func(since time.Duration) {
			if since > time.Second && len(p.State().Instances) == 0 {
				t.Fatalf("no live instance %v in", since)
			}
		})
		// Replaced every 3 s (half of 6 s): about 11 launches in 30 s.
		if joined < 8 || joined > 13 {
			t.Errorf("%d warm launches in 30 s of 6 s instances, want about 11 (one each 3 s)", joined)
		}
		p.SetMinInstances(0)
	})
}

// TestSocketsFillSlots: sockets waiting for an empty pool launch by the
// slots an instance takes, not by its CPU: 20 sockets, one launch; the
// instance that joins takes 8 (its function's own limit), and the 12
// left launch 2 more, sized by it.
func TestSocketsFillSlots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 64})
		var got []<-chan acquired
		for range 20 {
			ch := make(chan acquired, 1)
			go func() {
				lease, err := p.AcquireSocket(t.Context(), nil)
				ch <- acquired{lease, err}
			}()
			got = append(got, ch)
		}
		synctest.Wait()
		if ids := l.ids(); len(ids) != 1 {
			t.Fatalf("launches %v for 20 sockets, want 1 (64 slots each)", ids)
		}
		p.Add(newFakeConn(l.ids()[0], 8))
		synctest.Wait()
		if ids := l.ids(); len(ids) != 3 {
			t.Errorf("launches %v once an instance took 8, want 2 more for the 12 left", ids)
		}
		var served []*Lease
		for _, ch := range got {
			select {
			case a := <-ch:
				if a.err == nil {
					served = append(served, a.lease)
				}
			default:
			}
		}
		if len(served) != 8 {
			t.Errorf("%d sockets served by an instance of 8 slots, want 8", len(served))
		}
		for _, l := range served { // only now: a slot freed goes to the next socket waiting
			l.Release()
		}
		p.Close(context.Background())
	})
}
