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

// TestWarmInstanceEndingAtOnceBacksOff: warm instances that keep ending as
// soon as they join (a bootstrap that ignores warm, say) are relaunched
// ever more slowly, never in a loop.
func TestWarmInstanceEndingAtOnceBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		p.SetMinInstances(1)
		start := time.Now()
		joined := 0
		for time.Since(start) < 2*time.Minute {
			synctest.Wait()
			ids := l.ids()
			if len(ids) > joined {
				c := newFakeConn(ids[joined], 4)
				joined++
				p.Add(c)
				c.end()
				continue
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Backoffs of 1, 2, 4, 8, 16, 32, 60, 60 s: about 8 in 2 minutes.
		if joined > 10 {
			t.Errorf("%d warm launches in 2 minutes of instances ending at once, want a backoff (about 8)", joined)
		}
		p.SetMinInstances(0)
	})
}
