package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
)

// fakeConn stands in for an instance's tunnel (the pool's Conn): an
// instance that never answers a stream and says nothing of its load, alive
// until it is ended, closed or shut down. The pool's bookkeeping is what
// these tests hold, not the tunnel's.
type fakeConn struct {
	id       string
	limit    int
	fits     int           // what its hello says fit at once: 0, nothing learnt
	carried  bool          // its hello says it runs the request its launch carried
	roomIn   time.Duration // its hello's RoomInUs
	linger   time.Duration // its hello's LingerUs, if lingers
	lingers  bool          // its hello says its linger
	deadline time.Time

	mu       sync.Mutex
	done     chan struct{}
	shutdown bool
	load     *tunnel.Load // its last hint; nil: none yet
}

func newFakeConn(id string, limit int) *fakeConn {
	return &fakeConn{id: id, limit: limit, deadline: time.Now().Add(time.Minute), done: make(chan struct{})}
}

func (c *fakeConn) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("fakeConn carries no streams")
}
func (c *fakeConn) Claims() tunnel.Claims { return tunnel.Claims{ID: c.id, Function: "f"} }
func (c *fakeConn) Hello() tunnel.Hello {
	h := tunnel.Hello{RequestID: "req-" + c.id, Fits: c.fits, Carried: c.carried, RoomInUs: c.roomIn.Microseconds()}
	if c.lingers {
		h.LingerUs = new(c.linger.Microseconds())
	}
	return h
}
func (c *fakeConn) Handshake() (time.Time, time.Duration) { return time.Now(), 0 }
func (c *fakeConn) Limit() int                            { return c.limit }
func (c *fakeConn) Deadline() time.Time                   { return c.deadline }
func (c *fakeConn) Draining() bool                        { return false }
func (c *fakeConn) CanTakeStream() bool                   { return !c.ended() }
func (c *fakeConn) Load() (tunnel.Load, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.load == nil {
		return tunnel.Load{}, false
	}
	return *c.load, true
}
func (c *fakeConn) hint(l tunnel.Load)    { c.mu.Lock(); c.load = &l; c.mu.Unlock() }
func (c *fakeConn) WatchLoad(func())      { <-c.done }
func (c *fakeConn) Done() <-chan struct{} { return c.done }
func (c *fakeConn) Close() error          { c.end(); return nil }
func (c *fakeConn) Shutdown(context.Context) error {
	c.mu.Lock()
	c.shutdown = true
	c.mu.Unlock()
	c.end()
	return nil
}
func (c *fakeConn) wasShutdown() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.shutdown }
func (c *fakeConn) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
func (c *fakeConn) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended() {
		close(c.done)
	}
}

// fakeLauncher stands in for Lambda: each launch is recorded, and its
// invocation runs until the test ends it (or its context does).
type fakeLauncher struct {
	mu       sync.Mutex
	launched []string
	asked    map[string]Launch
	ends     map[string]chan error
}

func (l *fakeLauncher) Prepare(spec Launch) (string, func(context.Context) error, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := fmt.Sprint("launch-", len(l.launched)+1)
	l.launched = append(l.launched, id)
	if l.asked == nil {
		l.asked = map[string]Launch{}
	}
	l.asked[id] = spec
	if l.ends == nil {
		l.ends = map[string]chan error{}
	}
	end := make(chan error, 1)
	l.ends[id] = end
	return id, func(ctx context.Context) error {
		select {
		case err := <-end:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}

func (l *fakeLauncher) spec(id string) Launch {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.asked[id]
}

func (l *fakeLauncher) ids() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.launched...)
}

// end ends launch id's invocation with err.
func (l *fakeLauncher) end(id string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ends[id] <- err
}

func newTestPool(t *testing.T, cfg Config) (*Pool, *fakeLauncher) {
	t.Helper()
	l := &fakeLauncher{}
	cfg.Function, cfg.Launcher = "f", l
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Every instance shut down, every invocation ended: the bubble's
		// goroutines (the pool's and the fakes') all return.
		p.Close(context.Background())
		l.mu.Lock()
		for _, end := range l.ends {
			select {
			case end <- nil:
			default:
			}
		}
		l.mu.Unlock()
	})
	return p, l
}

// acquire starts an Acquire and returns where its outcome arrives.
func acquire(ctx context.Context, p *Pool, avoid *Lease) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, err := p.Acquire(ctx, avoid, false)
		ch <- acquired{l, err}
	}()
	return ch
}

type acquired struct {
	lease *Lease
	err   error
}

// firstInstance sends one request to an empty pool and lets the
// invocation it starts join with limit slots, its hello as hello sets it
// (if not nil): the instance, and the request's lease on it.
func firstInstance(t *testing.T, p *Pool, l *fakeLauncher, limit int, hello func(*fakeConn)) (*fakeConn, *Lease) {
	t.Helper()
	first := acquire(t.Context(), p, nil)
	synctest.Wait()
	ids := l.ids()
	if len(ids) != 1 {
		t.Fatalf("launches %v for one request on an empty pool, want one", ids)
	}
	conn := newFakeConn(ids[0], limit)
	if hello != nil {
		hello(conn)
	}
	p.Add(conn)
	got := <-first
	if got.err != nil || got.lease.Conn() != Conn(conn) {
		t.Fatalf("Acquire = %v, %v; want a lease on the instance that joined", got.lease, got.err)
	}
	return conn, got.lease
}

// TestColdRequestLaunchesAndJoins: a request on an empty pool starts one
// invocation and takes the instance that dials back; the slot it frees is
// the next request's, with no second launch.
func TestColdRequestLaunchesAndJoins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		conn, lease := firstInstance(t, p, l, 4, nil)
		lease.Release()
		second, err := p.Acquire(t.Context(), nil, false)
		if err != nil || second.Conn() != Conn(conn) {
			t.Fatalf("second Acquire = %v, %v; want the same instance", second, err)
		}
		second.Release()
		if st := p.State(); st.Stats.Launches != 1 || st.Stats.Joined != 1 || len(st.Instances) != 1 || st.Instances[0].InFlight != 0 || st.Instances[0].Served != 2 {
			t.Errorf("State = %+v; want one launch, one instance that served 2 and holds none", st)
		}
	})
}

// TestWaitersAreServedInOrder: requests waiting for a full instance get its
// freed slots first come, first served.
func TestWaitersAreServedInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 1, MaxInstances: 1})
		_, holder := firstInstance(t, p, l, 1, nil)
		var waits []<-chan acquired
		for range 3 {
			waits = append(waits, acquire(t.Context(), p, nil))
			synctest.Wait() // queued in this order
		}
		if n := len(l.ids()); n != 1 {
			t.Errorf("%d launches with MaxInstances 1", n)
		}
		for i, w := range waits {
			holder.Release()
			got := <-w
			if got.err != nil {
				t.Fatalf("waiter %d: %v", i, got.err)
			}
			for j, other := range waits[i+1:] {
				select {
				case o := <-other:
					t.Fatalf("waiter %d was served before waiter %d released: %+v", i+1+j, i, o)
				default:
				}
			}
			holder = got.lease
		}
		holder.Release()
	})
}

// TestCancelledWaiterHandsItsSlotOn: a request that gives up as a slot is
// assigned to it returns the slot; the slot is not lost.
func TestCancelledWaiterHandsItsSlotOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 1, MaxInstances: 1})
		_, holder := firstInstance(t, p, l, 1, nil)
		ctx, cancel := context.WithCancel(t.Context())
		gaveUp := acquire(ctx, p, nil)
		synctest.Wait()
		// The waiter gives up and, before it takes the pool's lock to
		// leave the queue, the freed slot is assigned to it: it must hand
		// the slot back. (Which comes first varies from run to run; either
		// way the slot is free after.)
		cancel()
		holder.Release()
		if got := <-gaveUp; got.err == nil {
			got.lease.Release() // it won the race: fine, it gives the slot back
		}
		next, err := p.Acquire(t.Context(), nil, false)
		if err != nil {
			t.Fatalf("Acquire after a waiter gave up: %v; want the freed slot", err)
		}
		next.Release()
		if st := p.State(); st.Instances[0].InFlight != 0 || st.Waiting != 0 {
			t.Errorf("State = %+v; want no stream held and nobody waiting", st)
		}
	})
}

// TestNackedRequestAvoidsItsInstance: a request an instance refused goes to
// another instance, and does not block the queue behind it while it waits.
func TestNackedRequestAvoidsItsInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 2, Policy: Spread})
		a, nacked := firstInstance(t, p, l, 2, nil)
		retry := acquire(t.Context(), p, nacked) // the only instance is the one to avoid
		synctest.Wait()
		other, err := p.Acquire(t.Context(), nil, false) // behind it in no queue
		if err != nil || other.Conn() != Conn(a) {
			t.Fatalf("a new request while the retry waits: %v, %v; want instance a", other, err)
		}
		ids := l.ids()
		if len(ids) != 2 {
			t.Fatalf("launches %v: want a second instance for the retry", ids)
		}
		b := newFakeConn(ids[1], 2)
		p.Add(b)
		got := <-retry
		if got.err != nil || got.lease.Conn() != Conn(b) {
			t.Fatalf("retry = %v, %v; want instance b", got.lease, got.err)
		}
		for _, l := range []*Lease{nacked, other, got.lease} {
			l.Release()
		}
	})
}

// TestRetryWaitsOnceForRoomDueOnItsNacker: a request nacked for CPU,
// whose nack says room is due on that instance sooner than a launch would
// bring one (launches have taken 20 ms here), waits for it and goes back
// to it instead of starting an invocation that would idle out. It does so
// once: nacked again, it launches at once; and it never waits for room
// due past maxHold.
func TestRetryWaitsOnceForRoomDueOnItsNacker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		first := acquire(t.Context(), p, nil)
		synctest.Wait()
		time.Sleep(20 * time.Millisecond) // the launch takes 20 ms
		conn := newFakeConn(l.ids()[0], 8)
		p.Add(conn)
		busy := (<-first).lease
		defer busy.Release()
		nack := func(inflight int, roomIn time.Duration) *Lease {
			t.Helper()
			conn.hint(tunnel.Load{InFlight: inflight, Room: 1})
			lease, err := p.Acquire(t.Context(), nil, false)
			if err != nil || lease.Conn() != Conn(conn) {
				t.Fatalf("Acquire = %v, %v; want the instance with room", lease, err)
			}
			conn.hint(tunnel.Load{InFlight: inflight, Room: 0, RoomIn: roomIn, At: time.Now()})
			lease.Release() // nacked: not answered
			return lease
		}
		// launched: the retry waiting on ch started the n-th launch at
		// once, for why, and takes the instance it brings.
		launched := func(ch <-chan acquired, n int, why string) {
			t.Helper()
			synctest.Wait()
			if got := len(l.ids()) - 1; got != n {
				t.Fatalf("%d launches for %s; want %d, at once", got, why, n)
			}
			in := newFakeConn(l.ids()[n], 8)
			p.Add(in)
			if got := <-ch; got.err != nil || got.lease.Conn() != Conn(in) {
				t.Errorf("retry (%s) = %v, %v; want the launched instance", why, got.lease, got.err)
			} else {
				got.lease.Release()
			}
			in.end()
			synctest.Wait()
		}

		nacked := nack(1, 5*time.Millisecond)
		start := time.Now()
		retry := acquire(t.Context(), p, nacked)
		synctest.Wait()
		if n := len(l.ids()); n != 1 {
			t.Errorf("%d launches for a retry whose room is due in 5 ms on its nacker; want none", n-1)
		}
		got := <-retry
		if got.err != nil || got.lease.Conn() != Conn(conn) {
			t.Fatalf("retry = %v, %v; want the instance that nacked it, once its room was due", got.lease, got.err)
		}
		if waited := time.Since(start); waited != 5*time.Millisecond {
			t.Errorf("retry waited %v; want the 5 ms until room was due", waited)
		}

		// Nacked again: no second wait; it launches.
		conn.hint(tunnel.Load{InFlight: 1, Room: 0, RoomIn: 5 * time.Millisecond, At: time.Now()})
		got.lease.Release()
		launched(acquire(t.Context(), p, got.lease), 1, "a retry nacked twice")

		// Room due later than a launch takes: a launch at once.
		launched(acquire(t.Context(), p, nack(1, maxHold+time.Millisecond)), 2, "a retry whose room is due past maxHold")

		// Refused for a reason room will not mend (NoHold): no wait.
		nacked = nack(1, 5*time.Millisecond)
		nacked.NoHold()
		launched(acquire(t.Context(), p, nacked), 3, "a retry its instance refused while draining")
	})
}

// TestGoneInstanceIsReplacedForWaiters: an instance whose tunnel ends
// leaves the pool, and requests waiting for it get a new invocation.
func TestGoneInstanceIsReplacedForWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One instance at most: the waiter gets no launch while a lives.
		p, l := newTestPool(t, Config{MaxConcurrency: 1, MaxInstances: 1})
		a, lease := firstInstance(t, p, l, 1, nil)
		waiting := acquire(t.Context(), p, nil)
		synctest.Wait()
		if ids := l.ids(); len(ids) != 1 {
			t.Fatalf("launches %v beside a live instance with MaxInstances 1", ids)
		}
		a.end() // the instance ends (its deadline, a crash)
		synctest.Wait()
		lease.Release() // its stream's end, after the tunnel's
		if st := p.State(); len(st.Instances) != 0 {
			t.Errorf("instances %+v after the tunnel ended, want none", st.Instances)
		}
		ids := l.ids()
		if len(ids) != 2 {
			t.Fatalf("launches %v after the instance went: want one for the waiter", ids)
		}
		p.Add(newFakeConn(ids[1], 1))
		if got := <-waiting; got.err != nil {
			t.Errorf("the waiter: %v; want the new instance", got.err)
		} else {
			got.lease.Release()
		}
	})
}

// TestSurplusInstanceIsShutDown: an instance that joins when nothing waits
// for it (its request was served meanwhile) is shut down at once rather
// than billed idle.
func TestSurplusInstanceIsShutDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 4})
		ctx, cancel := context.WithCancel(t.Context())
		gone := acquire(ctx, p, nil)
		synctest.Wait()
		cancel() // the client left before the instance came
		if got := <-gone; !errors.Is(got.err, ErrNoCapacity) {
			t.Fatalf("Acquire = %v; want ErrNoCapacity", got.err)
		}
		conn := newFakeConn(l.ids()[0], 4)
		p.Add(conn)
		synctest.Wait()
		if st := p.State(); !conn.wasShutdown() || st.Stats.Surplus != 1 || len(st.Instances) != 0 {
			t.Errorf("shut down %v, State %+v; want the surplus instance shut down and out of the pool", conn.wasShutdown(), st)
		}
	})
}

// TestLaunchesAreBounded: the waiting requests start as many invocations
// as MaxInstances allows, no more, and the queue is bounded by QueueLimit.
func TestLaunchesAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 1, MaxInstances: 2, QueueLimit: 5})
		ctx, cancel := context.WithCancel(t.Context())
		var waits []<-chan acquired
		for range 5 {
			waits = append(waits, acquire(ctx, p, nil))
		}
		synctest.Wait()
		if ids := l.ids(); len(ids) != 2 {
			t.Errorf("launches %v for 5 waiting requests with MaxInstances 2, want 2", ids)
		}
		if _, err := p.Acquire(t.Context(), nil, false); !errors.Is(err, ErrQueueFull) {
			t.Errorf("a sixth request: %v; want ErrQueueFull", err)
		}
		cancel()
		for _, w := range waits {
			if got := <-w; got.err == nil {
				t.Errorf("a waiter got %v after its context ended", got.lease)
			}
		}
	})
}

// TestLaunchThatNeverDialsBack: an invocation whose tunnel never arrives is
// given up after LaunchTimeout, counted, and replaced for the requests
// still waiting.
func TestLaunchThatNeverDialsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var failures []string
		p, l := newTestPool(t, Config{MaxConcurrency: 1, LaunchTimeout: 5 * time.Second,
			OnLaunchFailure: func(c string) { failures = append(failures, c) }})
		waiting := acquire(t.Context(), p, nil)
		synctest.Wait()
		time.Sleep(6 * time.Second)
		synctest.Wait()
		ids := l.ids()
		if len(ids) != 2 || len(failures) != 1 {
			t.Fatalf("launches %v, failures %v after the first timed out; want a second launch and one failure", ids, failures)
		}
		p.Add(newFakeConn(ids[1], 1))
		if got := <-waiting; got.err != nil {
			t.Errorf("the waiter: %v; want the second instance", got.err)
		} else {
			got.lease.Release()
		}
		if st := p.State(); st.Stats.LaunchFailures != 1 || st.ConsecutiveFailures != 0 || st.Pending != 0 {
			t.Errorf("State = %+v; want one failure, forgotten once an instance joined, nothing pending", st)
		}
		for _, id := range ids {
			l.end(id, nil)
		}
	})
}

// TestFreshSandboxTakesWhatLearntOnesFit: an instance from a sandbox that
// has learnt nothing (its hello says nothing of what fits) takes, before
// its first answer, what the last sandbox that had learnt the function's
// requests said fit at once, not every waiting request; and the requests
// waiting are launched an invocation each at once.
func TestFreshSandboxTakesWhatLearntOnesFit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		firstInstance(t, p, l, 8, func(c *fakeConn) { c.fits = 1 }) // one of these requests at a time
		for range 3 {
			acquire(t.Context(), p, nil)
		}
		synctest.Wait()
		ids := l.ids()
		if len(ids) != 4 {
			t.Fatalf("launches %v; want one more for each request the first instance has no room for: a fresh sandbox takes one", ids)
		}
		p.Add(newFakeConn(ids[1], 8)) // a fresh sandbox
		synctest.Wait()
		if in := instanceState(t, p, ids[1]); in.InFlight != 1 {
			t.Errorf("the fresh instance took %d requests at once; want 1, as the learnt one said", in.InFlight)
		}
	})
}

func instanceState(t *testing.T, p *Pool, id string) InstanceState {
	t.Helper()
	for _, in := range p.State().Instances {
		if in.RequestID == "req-"+id {
			return in
		}
	}
	t.Fatalf("no instance %s in %+v", id, p.State())
	return InstanceState{}
}

// TestColdFunctionLearnsFromItsFirstFullHint: before any sandbox has
// learnt the function, an instance full at 1 (its first request computes)
// is the word: a burst then gets an invocation each at once.
func TestColdFunctionLearnsFromItsFirstFullHint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		conn, lease := firstInstance(t, p, l, 8, nil)
		conn.hint(tunnel.Load{InFlight: 1, Full: true, Room: -1})
		lease.Release() // the hint on its answer (a nack carries one too)
		second, err := p.Acquire(t.Context(), nil, false)
		if err != nil || second.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v; want the idle instance", second, err)
		}
		for range 3 {
			acquire(t.Context(), p, nil)
		}
		synctest.Wait()
		if n := len(l.ids()); n != 4 {
			t.Errorf("%d launches in all; want 1 + one for each of the 3 requests the full instance cannot take", n)
		}
	})
}

// TestAnsweredInstanceWithoutRoomIsNotHeldToFits: an instance that has
// answered with no CPU opinion (no room: admission off, say) is held to
// cover as before, not to what fits at once for a fresh sandbox.
func TestAnsweredInstanceWithoutRoomIsNotHeldToFits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		conn, lease := firstInstance(t, p, l, 8, nil)
		conn.hint(tunnel.Load{InFlight: 1, Full: true, Room: -1})
		lease.Release()                  // fits is 1 from here
		conn.hint(tunnel.Load{Room: -1}) // then no opinion: never full
		for range 3 {
			if _, err := p.Acquire(t.Context(), nil, false); err != nil {
				t.Fatal(err)
			}
		}
		if in := instanceState(t, p, conn.id); in.InFlight != 3 {
			t.Errorf("the instance holds %d; want 3: it answered with no CPU opinion", in.InFlight)
		}
	})
}

// TestInstanceIsTriedWhenItsRoomIsDue: an instance whose hint says it has
// no room, but will in 30 ms, is passed over until then, then tried with
// one request (it judges it), and no more until it says again.
func TestInstanceIsTriedWhenItsRoomIsDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		conn, _ := firstInstance(t, p, l, 8, nil)
		conn.hint(tunnel.Load{InFlight: 1, Room: 0, RoomIn: 30 * time.Millisecond, At: time.Now()})
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		if _, err := p.Acquire(ctx, nil, false); err == nil {
			t.Fatal("placed on an instance with no room before its room was due")
		}
		cancel()
		time.Sleep(30 * time.Millisecond)
		lease, err := p.Acquire(t.Context(), nil, false)
		if err != nil || lease.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v once its room was due; want the instance", lease, err)
		}
		ctx, cancel = context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		if got, err := p.Acquire(ctx, nil, false); err == nil && got.Conn() == Conn(conn) {
			t.Error("tried twice on one hint")
		}
	})
}

// TestInstanceIsTriedOnceTheRequestItTookIsPastItsCPU: a hint from an
// idle instance says room for one, and how long the usual request
// computes (Ahead). The request the pool then sends fills it; one more is
// tried that long after that request was sent, not before, and once for
// that moment; the next moment comes Ahead after the request tried.
func TestInstanceIsTriedOnceTheRequestItTookIsPastItsCPU(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		conn, first := firstInstance(t, p, l, 8, nil)
		conn.hint(tunnel.Load{InFlight: 0, Room: 1, Ahead: 45 * time.Millisecond, At: time.Now()})
		first.Release()
		time.Sleep(time.Second) // the hint is old by the time the next request comes
		if lease, err := p.Acquire(t.Context(), nil, false); err != nil || lease.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v; want the idle instance", lease, err)
		}
		refused := func(when string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
			defer cancel()
			if got, err := p.Acquire(ctx, nil, false); err == nil && got.Conn() == Conn(conn) {
				t.Errorf("placed on the instance %s", when)
			}
		}
		time.Sleep(40 * time.Millisecond)
		refused("while the request it took was still computing")
		time.Sleep(5 * time.Millisecond)
		lease, err := p.Acquire(t.Context(), nil, false)
		if err != nil || lease.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v once the request it took was past its CPU; want the instance", lease, err)
		}
		refused("twice for one moment")
		time.Sleep(45 * time.Millisecond)
		if lease, err := p.Acquire(t.Context(), nil, false); err != nil || lease.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v once the request tried was past its CPU; want the instance", lease, err)
		}
	})
}

// TestRequestWaitsForRoomDueSoonerThanALaunch: a new request that no
// instance has room for, where one's room is due before a launch would
// bring an instance (launches have taken 20 ms here), waits for it
// instead of launching; a second for the same moment does not wait (only
// one can have it); one due later than maxHold launches at once.
func TestRequestWaitsForRoomDueSoonerThanALaunch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		first := acquire(t.Context(), p, nil)
		synctest.Wait()
		time.Sleep(20 * time.Millisecond) // the launch takes 20 ms
		conn := newFakeConn(l.ids()[0], 8)
		p.Add(conn)
		<-first
		conn.hint(tunnel.Load{InFlight: 1, Room: 0, RoomIn: 5 * time.Millisecond, At: time.Now()})
		start := time.Now()
		waiting := acquire(t.Context(), p, nil)
		synctest.Wait()
		if n := len(l.ids()); n != 1 {
			t.Errorf("%d launches for a request whose room is due in 5 ms; want none", n-1)
		}
		ctx, cancel := context.WithCancel(t.Context())
		second := acquire(ctx, p, nil)
		synctest.Wait()
		if n := len(l.ids()); n != 2 {
			t.Errorf("%d launches once a second request came for the same moment; want one, for it", n-1)
		}
		got := <-waiting
		if got.err != nil || got.lease.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v; want the instance whose room was due", got.lease, got.err)
		}
		if waited := time.Since(start); waited != 5*time.Millisecond {
			t.Errorf("waited %v; want the 5 ms until its room was due", waited)
		}
		cancel()
		<-second

		// A request that gives up while it waits leaves the moment to the
		// next.
		conn.hint(tunnel.Load{InFlight: 2, Room: 0, RoomIn: 5 * time.Millisecond, At: time.Now()})
		start = time.Now()
		ctx, cancel = context.WithTimeout(t.Context(), 2*time.Millisecond)
		if _, err := p.Acquire(ctx, nil, false); !errors.Is(err, ErrNoCapacity) || time.Since(start) != 2*time.Millisecond {
			t.Errorf("Acquire = %v after %v, its client gone while it waited; want ErrNoCapacity at once", err, time.Since(start))
		}
		cancel()
		if lease, err := p.Acquire(t.Context(), nil, false); err != nil || lease.Conn() != Conn(conn) || time.Since(start) != 5*time.Millisecond {
			t.Errorf("Acquire = %v, %v after %v; want the instance at its moment, 5 ms", lease, err, time.Since(start))
		}

		// A last try neither waits for room only due nor takes it.
		conn.hint(tunnel.Load{InFlight: 3, Room: 0, RoomIn: 5 * time.Millisecond, At: time.Now()})
		ctx, cancel = context.WithTimeout(t.Context(), 2*maxHold)
		last, err := p.AcquireCarriable(ctx, nil, false, true, func() ([]byte, error) { return []byte("x"), nil })
		if err == nil && last.Conn() == Conn(conn) {
			t.Error("a last try went to an instance whose room was only due")
		}
		cancel()

		// Due past maxHold: it queues for the launch (still pending), and
		// nothing sends it to the instance when that moment comes.
		conn.hint(tunnel.Load{InFlight: 2, Room: 0, RoomIn: maxHold + time.Millisecond, At: time.Now()})
		ctx, cancel = context.WithTimeout(t.Context(), 2*maxHold)
		defer cancel()
		if got, err := p.Acquire(ctx, nil, false); err == nil && got.Conn() == Conn(conn) {
			t.Error("waited for room due past maxHold")
		}
	})
}

// TestFreshInstanceIsTriedWhenItsHelloSaysRoomIsDue: before it has
// answered, an instance held to what its hello says fits is tried once
// when the hello says room is due; a request that was just refused
// elsewhere is not sent to it; an idle instance is preferred to it.
func TestFreshInstanceIsTriedWhenItsHelloSaysRoomIsDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 8})
		first := acquire(t.Context(), p, nil)
		synctest.Wait()
		conn := newFakeConn(l.ids()[0], 8)
		conn.fits, conn.roomIn = 1, 30*time.Millisecond
		p.Add(conn)
		<-first
		second := acquire(t.Context(), p, nil) // the instance is full: a launch
		synctest.Wait()
		other := newFakeConn(l.ids()[1], 8)
		p.Add(other)
		(<-second).lease.Release() // idle now
		time.Sleep(30 * time.Millisecond)
		// The idle instance takes the next request, not the due one.
		if lease, err := p.Acquire(t.Context(), nil, false); err != nil || lease.Conn() != Conn(other) {
			t.Fatalf("Acquire = %v, %v; want the idle instance", lease, err)
		}
		// A retry that has had its chance to hold does not go to an
		// instance only due.
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		if got, err := p.Acquire(ctx, &Lease{inst: &instance{}, held: true}, false); err == nil && got.Conn() == Conn(conn) {
			t.Error("a retry that had held once went to an instance whose room was only due")
		}
		if lease, err := p.Acquire(t.Context(), nil, false); err != nil || lease.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v once its hello's room was due; want it", lease, err)
		}
	})
}

// TestLastTryStaysOffAnInstanceAboutToEnd: a request that cannot be sent
// again (a last try) goes to an idle instance only while the linger its
// hello said leaves time after its last answer; near its end, a stream
// could meet the instance's GOAWAY and be refused, so the request waits
// for a launch instead. A request that can be sent again still takes it,
// and so does a last try where the hello said no linger. A nack does not
// restart the instance's idle clock.
func TestLastTryStaysOffAnInstanceAboutToEnd(t *testing.T) {
	tests := []struct {
		name    string
		lingers bool
		linger  time.Duration
		idle    time.Duration // since its answer
		nack    bool          // a request it nacked came and went half way
		takes   bool          // a last try goes to it
	}{
		{"early in its linger", true, 100 * time.Millisecond, 10 * time.Millisecond, false, true},
		// The model asks a quarter more than the gap it expects.
		{"a steady client's gap", true, 125 * time.Millisecond, 100 * time.Millisecond, false, true},
		{"near its end", true, 100 * time.Millisecond, 95 * time.Millisecond, false, false},
		{"near its end after a nack", true, 100 * time.Millisecond, 95 * time.Millisecond, true, false},
		{"a short linger", true, 2 * time.Millisecond, 1600 * time.Microsecond, false, false},
		{"a short linger just answered", true, 2 * time.Millisecond, 500 * time.Microsecond, false, false},
		{"a linger past the margin", true, 5 * time.Millisecond, 500 * time.Microsecond, false, true},
		{"no linger", true, 0, 0, false, false},
		{"a hello that does not say", false, 0, 95 * time.Millisecond, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, l := newTestPool(t, Config{MaxConcurrency: 4})
				conn, lease := firstInstance(t, p, l, 4, func(c *fakeConn) { c.lingers, c.linger = tt.lingers, tt.linger })
				lease.Answered(false)
				lease.Release()
				if tt.nack {
					time.Sleep(tt.idle / 2)
					nacked, err := p.Acquire(t.Context(), nil, false)
					if err != nil || nacked.Conn() != Conn(conn) {
						t.Fatalf("Acquire = %v, %v; want the idle instance", nacked, err)
					}
					nacked.Release() // not answered
					time.Sleep(tt.idle - tt.idle/2)
				} else {
					time.Sleep(tt.idle)
				}

				ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
				defer cancel()
				lease, err := p.AcquireCarriable(ctx, nil, false, true, nil)
				if took := err == nil && lease.Conn() == Conn(conn); took != tt.takes {
					t.Fatalf("last try after %v idle: took the instance %v (%v), want %v", tt.idle, took, err, tt.takes)
				}
				if err == nil {
					lease.Release()
					return
				}
				if n := len(l.ids()); n != 2 {
					t.Errorf("launches %d; want a second for the last try", n)
				}
				// One that can be sent again takes the risk: a refusal
				// costs it only a try.
				if lease, err := p.Acquire(t.Context(), nil, false); err != nil || lease.Conn() != Conn(conn) {
					t.Errorf("Acquire = %v, %v; want the idle instance", lease, err)
				}
			})
		})
	}
}

// TestOlderBootstrapIsAskedAShortLinger: once an instance joins whose
// hello does not say its linger (an older bootstrap, which the pool
// cannot keep last tries off near the end of one), launches ask no more
// than the starting linger, whatever the model would choose.
func TestOlderBootstrapIsAskedAShortLinger(t *testing.T) {
	for _, says := range []bool{false, true} {
		t.Run(fmt.Sprintf("hello says its linger: %v", says), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, l := newTestPool(t, Config{MaxConcurrency: 1, MaxLinger: 100 * time.Millisecond})
				p.mu.Lock()
				for range minLingerSamples {
					p.linger.addGap(10 * time.Millisecond)
				}
				p.linger.overhead = 20 * time.Millisecond
				model := p.linger.choose()
				p.mu.Unlock()
				if model <= startLinger {
					t.Fatalf("model chose %v; the test needs more than %v", model, startLinger)
				}
				firstInstance(t, p, l, 1, func(c *fakeConn) { c.lingers, c.linger = says, model })
				acquire(t.Context(), p, nil) // the instance is full (limit 1): a launch
				synctest.Wait()
				want := min(model, startLinger)
				if says {
					want = model
				}
				if ids := l.ids(); len(ids) != 2 || l.spec(ids[1]).Linger != want {
					t.Errorf("launches %v, the second asking %v; want it to ask %v", ids, l.spec(ids[len(ids)-1]).Linger, want)
				}
			})
		})
	}
}

// TestLastTryWaitingDoesNotHoldBackOthers: a last try at the head of the
// queue that passes over an instance near its linger's end does not keep
// the requests behind it, which may take that instance, waiting.
func TestLastTryWaitingDoesNotHoldBackOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, l := newTestPool(t, Config{MaxConcurrency: 1})
		conn, lease := firstInstance(t, p, l, 1, func(c *fakeConn) { c.lingers, c.linger = true, 100*time.Millisecond })
		lease.Answered(false)
		lease.Release()
		time.Sleep(90 * time.Millisecond)
		busy, err := p.Acquire(t.Context(), nil, false) // full now (limit 1)
		if err != nil || busy.Conn() != Conn(conn) {
			t.Fatalf("Acquire = %v, %v; want the idle instance", busy, err)
		}
		last := make(chan acquired, 1)
		go func() {
			l, err := p.AcquireCarriable(t.Context(), nil, false, true, nil)
			last <- acquired{l, err}
		}()
		synctest.Wait()
		next := acquire(t.Context(), p, nil)
		synctest.Wait()
		time.Sleep(5 * time.Millisecond)
		busy.Release() // a nack: the instance's idle clock runs from its answer
		synctest.Wait()
		select {
		case got := <-next:
			if got.err != nil || got.lease.Conn() != Conn(conn) {
				t.Fatalf("the request behind the last try got %v, %v; want the instance", got.lease, got.err)
			}
		default:
			t.Fatal("the request behind the last try still waits though the instance is free to it")
		}
		select {
		case got := <-last:
			t.Fatalf("the last try got %v, %v; want it waiting for its launch", got.lease, got.err)
		default:
		}
	})
}
