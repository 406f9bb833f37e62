package admit

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

// clock is a test's CPU counter and wall clock, advanced by hand so that
// each case knows exactly what every request cost.
type clock struct {
	cpu time.Duration
	own time.Duration // of cpu, the bootstrap's own
	now time.Time
}

func newAdmitter(c *clock, cpus float64) *Admitter {
	c.now = time.Unix(1e9, 0)
	return New(Config{CPUs: cpus, Counter: func() time.Duration { return c.cpu }, Own: func() time.Duration { return c.own },
		Now: func() time.Time { return c.now }})
}

// teach runs n requests of kind k one at a time, each using cpu of wall.
func teach(a *Admitter, c *clock, k Kind, cpu, wall time.Duration, n int) {
	for range n {
		t := a.Take(k)
		c.cpu += cpu
		c.now = c.now.Add(wall)
		t.Done()
	}
}

var (
	io    = Kind{Exact: "GET /io", Path: "GET /io", Segment: "GET /io/*"}
	burn  = Kind{Exact: "GET /burn", Path: "GET /burn", Segment: "GET /burn/*"}
	seed  = Kind{Exact: "GET /seed", Path: "GET /seed", Segment: "GET /seed/*"}
	quick = Kind{Exact: "GET /quick", Path: "GET /quick", Segment: "GET /quick/*"}
	fresh = Kind{Exact: "GET /new", Path: "GET /new", Segment: "GET /new/*"}
)

func TestAdmit(t *testing.T) {
	ms := time.Millisecond
	tests := map[string]struct {
		cpus     float64
		inflight []Kind
		next     Kind
		want     bool
	}{
		"the first request always runs, however heavy":        {1, nil, burn, true},
		"I/O-bound beside nine I/O-bound":                     {1, []Kind{io, io, io, io, io, io, io, io, io}, io, true},
		"CPU-bound beside CPU-bound on one vCPU":              {1, []Kind{burn}, burn, false},
		"I/O-bound beside CPU-bound: its 1ms waits about 1ms": {1, []Kind{burn}, io, true},
		"CPU-bound beside a quick CPU-only request":           {1, []Kind{quick}, burn, true},
		"seed beside I/O-bound and CPU-bound":                 {1, []Kind{io, burn}, seed, false},
		"half CPU beside half CPU (seed)":                     {1, []Kind{seed}, seed, false},
		"CPU-bound beside CPU-bound on two vCPUs":             {2, []Kind{burn}, burn, true},
		"a third CPU-bound on two vCPUs":                      {2, []Kind{burn, burn}, burn, false},
		"I/O-bound on a fraction of a vCPU, beside another":   {0.29, []Kind{io}, io, true},
		"a kind never seen is judged by the prior":            {1, []Kind{burn}, fresh, true},
		"a new path learns from its first segment":            {1, []Kind{burn}, Kind{Exact: "GET /burn/7", Path: "GET /burn/7", Segment: "GET /burn/*"}, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			a := newAdmitter(c, tt.cpus)
			teach(a, c, io, 1*ms, 100*ms, 3)
			teach(a, c, burn, 100*ms, 100*ms, 3)
			teach(a, c, seed, 50*ms, 100*ms, 3)
			teach(a, c, quick, ms/3, ms/2, 3)
			for _, k := range tt.inflight {
				a.Take(k)
			}
			if _, got := a.Admit(tt.next); got != tt.want {
				t.Errorf("Admit(%s) beside %d = %v, want %v", tt.next.Path, len(tt.inflight), got, tt.want)
			}
		})
	}
}

// TestColdFunctionPacks: before any request has finished, requests are
// admitted on the prior, so a cold burst of I/O-bound requests shares.
func TestColdFunctionPacks(t *testing.T) {
	c := &clock{}
	a := newAdmitter(c, 1)
	for i := range 10 {
		if _, ok := a.Admit(io); !ok {
			t.Fatalf("request %d of a cold burst was refused", i+1)
		}
	}
}

// TestColdSandboxSeesInFlight: before any request of a kind has finished,
// a request of that kind is not admitted beside one of its kind that is
// computing (a cold burst of CPU-bound requests would all share one vCPU),
// judged by what that one has used so far; other kinds, and a kind whose
// request in flight has only waited, still share.
func TestColdSandboxSeesInFlight(t *testing.T) {
	ms := time.Millisecond
	tests := map[string]struct {
		cpus          float64
		used, elapsed time.Duration // by the request in flight, of kind fresh
		next          Kind
		want          bool
	}{
		"same path, first one computing":             {1, 6 * ms, 6 * ms, fresh, false},
		"same path, first one past its start":        {1, 3 * ms / 2, 3 * ms, fresh, true},
		"same path, first one computing for a while": {1, 30 * ms, 30 * ms, fresh, false},
		"same segment, first one computing":          {1, 30 * ms, 30 * ms, Kind{Exact: "GET /new?x=1", Path: "GET /new", Segment: "GET /new/*"}, false},
		"0.29 vCPU, first one using its share":       {0.29, 6 * ms, 20 * ms, fresh, false},
		"same path, first one waiting":               {1, ms / 5, 30 * ms, fresh, true},
		"another path":                               {1, 30 * ms, 30 * ms, io, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			a := newAdmitter(c, tt.cpus)
			first := a.Take(fresh)
			c.cpu += tt.used
			c.now = c.now.Add(tt.elapsed)
			if _, got := a.Admit(tt.next); got != tt.want {
				t.Errorf("Admit(%s) = %v, want %v", tt.next.Exact, got, tt.want)
			}
			first.Done()
		})
	}
}

// TestColdBurstArrivingIsNotComputing: the bootstrap's own CPU (a burst
// of streams arriving and proxied) is not taken for the app computing.
func TestColdBurstArrivingIsNotComputing(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		own  time.Duration // of the 6 ms the sandbox used in 6 ms
		want bool
	}{{5 * ms, true}, {0, false}} {
		c := &clock{}
		a := newAdmitter(c, 1)
		first := a.Take(fresh)
		c.cpu += 6 * ms
		c.own += tt.own
		c.now = c.now.Add(6 * ms)
		if _, got := a.Admit(fresh); got != tt.want {
			t.Errorf("the bootstrap's own %v of the sandbox's 6ms: Admit = %v, want %v", tt.own, got, tt.want)
		}
		first.Done()
	}
}

// TestAppCPUDoesNotDrift: the counter and the bootstrap's own are read at
// slightly different moments; what the app is charged must not grow from
// that alone.
func TestAppCPUDoesNotDrift(t *testing.T) {
	c := &clock{}
	a := newAdmitter(c, 1)
	first := a.Take(fresh)
	for i := range 100 {
		c.cpu += time.Millisecond
		c.own += time.Millisecond + time.Duration(1-2*(i%2))*200*time.Microsecond // ahead, then behind
		c.now = c.now.Add(time.Millisecond)
		a.Hint(nil, 0)
	}
	if got := time.Duration(first.app); got > 300*time.Microsecond {
		t.Errorf("the app was charged %v while the bootstrap used all the CPU", got)
	}
	first.Done()
}

// TestOwnReadOnlyWhileWatching: the bootstrap's own CPU (a syscall) is
// read only while a request of a kind not yet learnt is in flight.
func TestOwnReadOnlyWhileWatching(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	reads := 0
	a := New(Config{CPUs: 1, Counter: func() time.Duration { return c.cpu },
		Own: func() time.Duration { reads++; return c.own }, Now: func() time.Time { return c.now }})
	teach(a, c, io, time.Millisecond, 100*time.Millisecond, 1)
	learnt := reads
	in := a.Take(io)
	for range 10 {
		c.now = c.now.Add(time.Millisecond)
		a.Hint(nil, 0)
	}
	in.Done()
	if reads != learnt {
		t.Errorf("Own read %d times with only learnt kinds in flight; want none", reads-learnt)
	}
}

// TestWatchNeedsTheAppApart: without the bootstrap's own CPU to tell the
// app's from (an app in the bootstrap's process, or a coarse counter),
// kinds not yet learnt are not watched: no wait, judged by the prior.
func TestWatchNeedsTheAppApart(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	a := New(Config{CPUs: 1, Counter: func() time.Duration { return c.cpu }, Now: func() time.Time { return c.now }})
	first := a.Take(fresh)
	if d := a.Wait(fresh); d != 0 {
		t.Errorf("Wait = %v, want 0", d)
	}
	c.cpu += 6 * time.Millisecond
	c.now = c.now.Add(6 * time.Millisecond)
	if _, ok := a.Admit(fresh); !ok {
		t.Error("refused on a watch that is off")
	}
	first.Done()
}

// TestColdHintSaysFull: with nothing learnt, the hint says full while a
// request in flight computes (the router sizes a cold function's launches
// by it), and not while it waits.
func TestColdHintSaysFull(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		used time.Duration
		want bool
	}{{6 * ms, false}, {ms, true}} {
		c := &clock{}
		a := newAdmitter(c, 1)
		first := a.Take(fresh)
		c.cpu += tt.used
		c.now = c.now.Add(6 * ms)
		if _, fits, _ := a.Hint(nil, 0); fits != tt.want {
			t.Errorf("first request used %v of 6ms: Hint fits = %v, want %v", tt.used, fits, tt.want)
		}
		first.Done()
	}
}

// TestWaitToJudgeColdKind: a request of a kind not yet learnt that
// arrives with its kind's first request a moment old waits until that one
// has run for Observe, so that it is judged on what that one did; once
// the kind is learnt, or with none of its kind in flight, it waits for
// nothing.
func TestWaitToJudgeColdKind(t *testing.T) {
	ms := time.Millisecond
	c := &clock{}
	a := newAdmitter(c, 1)
	if d := a.Wait(fresh); d != 0 {
		t.Errorf("nothing in flight: Wait = %v, want 0", d)
	}
	first := a.Take(fresh)
	c.now = c.now.Add(ms / 2)
	if d := a.Wait(fresh); d != DefaultObserve-ms/2 {
		t.Errorf("its kind's first request %v old: Wait = %v, want %v", ms/2, d, DefaultObserve-ms/2)
	}
	if d := a.Wait(io); d != 0 {
		t.Errorf("another kind: Wait = %v, want 0", d)
	}
	c.now = c.now.Add(DefaultObserve)
	if d := a.Wait(fresh); d != 0 {
		t.Errorf("first request observed: Wait = %v, want 0", d)
	}
	first.Done()
	second := a.Take(fresh)
	if d := a.Wait(fresh); d != 0 {
		t.Errorf("kind learnt: Wait = %v, want 0", d)
	}
	second.Done()

	// One seen computing already: judged at once.
	c2 := &clock{}
	b := newAdmitter(c2, 1)
	busy := b.Take(fresh)
	c2.cpu += DefaultObserve / 2
	c2.now = c2.now.Add(DefaultObserve / 2)
	if d := b.Wait(fresh); d != 0 {
		t.Errorf("its kind's first request seen computing: Wait = %v, want 0", d)
	}
	busy.Done()
}

// TestAttribution: CPU used while a light and a heavy request overlap is
// split by what each is expected to use, so the light one is not taught
// that it is heavy.
func TestAttribution(t *testing.T) {
	ms := time.Millisecond
	c := &clock{}
	a := newAdmitter(c, 1)
	teach(a, c, io, 1*ms, 100*ms, 3)
	teach(a, c, burn, 90*ms, 100*ms, 3)
	heavy, light := a.Take(burn), a.Take(io)
	c.cpu += 91 * ms
	c.now = c.now.Add(100 * ms)
	light.Done()
	heavy.Done()
	got := time.Duration(a.kinds[io.Exact].avg.cpu)
	if got > 3*ms {
		t.Errorf("the light kind's CPU became %v after overlapping a heavy one, want about 1ms", got)
	}
	if got := time.Duration(a.kinds[burn.Exact].avg.cpu); got < 85*ms {
		t.Errorf("the heavy kind's CPU became %v, want about 90ms", got)
	}
}

// TestHint: full once a usual request would not fit, leaving out the
// request being answered.
func TestHint(t *testing.T) {
	ms := time.Millisecond
	c := &clock{}
	a := newAdmitter(c, 1)
	teach(a, c, burn, 100*ms, 100*ms, 3)
	if u, fits, _ := a.Hint(nil, 0); u != 0 || !fits {
		t.Errorf("idle: Hint = %v, %v; want 0, true", u, fits)
	}
	one := a.Take(burn)
	if u, fits, _ := a.Hint(nil, 0); u < 0.9 || fits {
		t.Errorf("one CPU-bound in flight: Hint = %.2f, %v; want about 1, false", u, fits)
	}
	if _, fits, _ := a.Hint(one, 0); !fits {
		t.Error("answering the only request: Hint says full")
	}
}

func TestKindsBounded(t *testing.T) {
	c := &clock{}
	a := newAdmitter(c, 1)
	for i := range 2 * maxKinds {
		k := Kind{Exact: fmt.Sprintf("GET /x?%d", i), Path: fmt.Sprintf("GET /x/%d", i), Segment: "GET /x/*"}
		teach(a, c, k, time.Millisecond, 10*time.Millisecond, 1)
	}
	if n := len(a.kinds); n > maxKinds {
		t.Errorf("%d kinds kept, want at most %d", n, maxKinds)
	}
	if a.fn.n != 2*maxKinds {
		t.Errorf("the function learnt from %d requests, want every one (%d)", a.fn.n, 2*maxKinds)
	}
}

// TestProcessCounterSeesBurn: the fallback counter reads this process's
// real CPU.
func TestProcessCounterSeesBurn(t *testing.T) {
	count := ProcessCounter(nil)
	before := count()
	deadline := time.Now().Add(300 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	if got := count() - before; got < 20*time.Millisecond {
		t.Errorf("after burning for 300ms the counter moved %v (x=%d), want at least 20ms", got, x)
	}
	if got := procCPU(1 << 30); got != 0 {
		t.Errorf("procCPU(missing) = %v, want 0", got)
	}
}

func TestKindOf(t *testing.T) {
	tests := map[string]Kind{
		"/":              {"GET /", "GET /", "GET //*"},
		"/render/42?x=1": {"GET /render/42?x=1", "GET /render/42", "GET /render/*"},
		"/api":           {"GET /api", "GET /api", "GET /api/*"},
	}
	for target, want := range tests {
		r := httptest.NewRequest("GET", target, nil)
		if got := KindOf(r); got != want {
			t.Errorf("KindOf(%s) = %+v, want %+v", target, got, want)
		}
	}
}

// TestFits: what a hello reports, from what the sandbox has learnt.
func TestFits(t *testing.T) {
	ms := time.Millisecond
	tests := map[string]struct {
		cpus      float64
		cpu, wall time.Duration
		want      int
	}{
		"CPU-bound: one at a time":     {1, 100 * ms, 100 * ms, 1},
		"CPU-bound on two vCPUs":       {2, 100 * ms, 100 * ms, 2},
		"I/O-bound: up to the limit":   {1, ms / 2, 500 * ms, 64},
		"api at 0.29 vCPU: a few only": {0.29, 10 * ms, 134 * ms, 1},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			a := newAdmitter(c, tt.cpus)
			if got := a.Fits(64); got != 0 {
				t.Errorf("before learning: Fits = %d, want 0", got)
			}
			teach(a, c, io, tt.cpu, tt.wall, 3)
			if got := a.Fits(64); got != tt.want {
				t.Errorf("Fits = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestOverrunningNeighbour: a request that has used more CPU than its kind
// led to expect is not taken to be nearly done.
func TestOverrunningNeighbour(t *testing.T) {
	ms := time.Millisecond
	c := &clock{}
	a := newAdmitter(c, 1)
	teach(a, c, burn, 150*ms, 600*ms, 3) // slow on a busy machine: a quarter of a vCPU
	long := a.Take(burn)
	c.cpu += 400 * ms // far past the 150 ms its kind takes
	c.now = c.now.Add(500 * ms)
	if _, ok := a.Admit(burn); ok {
		t.Error("admitted a CPU-bound request beside one that has overrun its estimate and is still computing")
	}
	long.Done()
}

// TestNeighbourDoneComputing: a request that has used the CPU its kind
// takes, within its kind's time, is waiting (an API handler on its
// database): a request may run beside it. One that has just started its
// CPU is not.
func TestNeighbourDoneComputing(t *testing.T) {
	ms := time.Millisecond
	tests := map[string]struct {
		cpus      float64
		cpu, wall time.Duration // what the kind takes
		used      time.Duration // what the neighbour has used
		elapsed   time.Duration // and for how long it has run
		want      bool
	}{
		"api at 0.29 vCPU, neighbour waiting":        {0.29, 10 * ms, 134 * ms, 10 * ms, 40 * ms, true},
		"api at 0.29 vCPU, neighbour computing":      {0.29, 10 * ms, 134 * ms, 2 * ms, 7 * ms, false},
		"seed at 1 vCPU, neighbour waiting":          {1, 50 * ms, 100 * ms, 50 * ms, 55 * ms, true},
		"seed at 1 vCPU, neighbour half way":         {1, 50 * ms, 100 * ms, 25 * ms, 25 * ms, false},
		"seed at 1 vCPU, neighbour overran its CPU":  {1, 50 * ms, 100 * ms, 80 * ms, 90 * ms, false},
		"seed at 1 vCPU, neighbour overran its time": {1, 50 * ms, 100 * ms, 50 * ms, 160 * ms, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			a := newAdmitter(c, tt.cpus)
			teach(a, c, seed, tt.cpu, tt.wall, 3)
			n := a.Take(seed)
			c.cpu += tt.used
			c.now = c.now.Add(tt.elapsed)
			if _, got := a.Admit(seed); got != tt.want {
				t.Errorf("Admit = %v, want %v", got, tt.want)
			}
			n.Done()
		})
	}
}

// TestRoom: how many more usual requests fit beside those in flight now,
// which moves as their CPU is used without any request starting or ending.
func TestRoom(t *testing.T) {
	ms := time.Millisecond
	tests := map[string]struct {
		cpus      float64
		cpu, wall time.Duration // the usual request
		inflight  int
		used      time.Duration // by each in flight
		elapsed   time.Duration
		want      int
	}{
		"idle: the first always runs":            {1, 100 * ms, 100 * ms, 0, 0, 0, 1},
		"CPU-bound busy: none":                   {1, 100 * ms, 100 * ms, 1, 10 * ms, 10 * ms, 0},
		"I/O-bound: up to the limit":             {1, ms / 2, 500 * ms, 3, 0, 0, 61},
		"api at 0.29 vCPU, computing: none":      {0.29, 10 * ms, 134 * ms, 1, 2 * ms, 7 * ms, 0},
		"api at 0.29 vCPU, waiting: one":         {0.29, 10 * ms, 134 * ms, 1, 10 * ms, 40 * ms, 1},
		"api at 1 vCPU beside one waiting: four": {1, 10 * ms, 110 * ms, 1, 10 * ms, 20 * ms, 4}, // as if it were not there: it computes no more
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			a := newAdmitter(c, tt.cpus)
			if _, _, got := a.Hint(nil, 64); got != -1 {
				t.Errorf("before learning: Room = %d, want -1", got)
			}
			teach(a, c, io, tt.cpu, tt.wall, 3)
			for range tt.inflight {
				a.Take(io)
			}
			c.cpu += time.Duration(tt.inflight) * tt.used
			c.now = c.now.Add(tt.elapsed)
			if _, _, got := a.Hint(nil, 64-tt.inflight); got != tt.want {
				t.Errorf("Room = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestWaitingRequestsLeaveTheCPUFree: API handlers that have done their
// 10 ms of computing and wait 100 ms on a database leave a vCPU all but
// free: the ninth is admitted beside eight waiting. It was once refused:
// the CPU each newcomer used was charged to all in flight alike, so the
// waiting ones seemed to have overrun their kind and to be computing
// still. Eight that have not yet computed hold it back.
func TestWaitingRequestsLeaveTheCPUFree(t *testing.T) {
	ms := time.Millisecond
	for name, tt := range map[string]struct {
		each time.Duration // the CPU each of the eight uses after it starts
		want bool
	}{
		"eight waiting":        {10 * ms, true},
		"eight still to start": {ms / 2, false},
	} {
		t.Run(name, func(t *testing.T) {
			c := &clock{}
			a := newAdmitter(c, 1)
			teach(a, c, seed, 10*ms, 110*ms, 20)
			var waiting []*Ticket
			for range 8 {
				tk := a.Take(seed)
				c.cpu += tt.each
				c.now = c.now.Add(12 * ms)
				waiting = append(waiting, tk)
			}
			tk, got := a.Admit(seed)
			if got != tt.want {
				t.Errorf("ninth beside eight: Admit = %v, want %v", got, tt.want)
			}
			if tk != nil {
				tk.Done()
			}
			for _, w := range waiting {
				w.Done()
			}
		})
	}
}

// TestRoomIn: an instance with no room says when it expects some: the CPU
// its requests have left (beyond a tenth of their kind's), on its vCPU;
// nothing once their CPU is behind them, or before anything is learnt.
func TestRoomIn(t *testing.T) {
	ms := time.Millisecond
	c := &clock{}
	a := newAdmitter(c, 0.25)
	if a.Take(seed); a.RoomIn(nil) != 0 {
		t.Errorf("RoomIn = %v with nothing learnt; want 0", a.RoomIn(nil))
	}
	if got := a.UsualAhead(); got != 0 {
		t.Errorf("UsualAhead = %v with nothing learnt; want 0", got)
	}
	c = &clock{}
	a = newAdmitter(c, 0.25)
	teach(a, c, seed, 20*ms, 200*ms, 3)
	if got, want := a.Ahead(seed), 72*ms; got < want-ms || got > want+ms {
		t.Errorf("Ahead(seed) = %v; want about %v", got, want)
	}
	if got := a.Ahead(fresh); got != 0 {
		t.Errorf("Ahead of a kind not learnt = %v; want 0", got)
	}
	if got, want := a.UsualAhead(), a.Ahead(seed); got != want {
		t.Errorf("UsualAhead = %v, where every request learnt was seed's; want Ahead(seed), %v", got, want)
	}
	t1 := a.Take(seed)
	a.Hint(nil, 8)
	if got, want := a.RoomIn(nil), 72*ms; got < want-ms || got > want+ms { // (20 - 2) ms / 0.25
		t.Errorf("RoomIn = %v beside a fresh request; want about %v", got, want)
	}
	c.cpu += 20 * ms
	c.now = c.now.Add(80 * ms)
	a.Hint(nil, 8)
	if got := a.RoomIn(nil); got != 0 {
		t.Errorf("RoomIn = %v once its CPU is behind it; want 0", got)
	}
	if got := a.RoomIn(t1); got != 0 {
		t.Errorf("RoomIn = %v leaving out the only request; want 0", got)
	}

	// On one vCPU, two fresh ones: their 18 ms each, one after the other.
	c = &clock{}
	a = newAdmitter(c, 1)
	teach(a, c, seed, 20*ms, 200*ms, 3)
	a.Take(seed)
	a.Take(seed)
	a.Hint(nil, 8)
	if got, want := a.RoomIn(nil), 36*ms; got < want-ms || got > want+ms {
		t.Errorf("RoomIn = %v beside two fresh requests; want about %v", got, want)
	}

	// CPU-bound: even once a request's CPU is all but behind it, what it
	// has left (a tenth) would delay another past its budget: no time is
	// said, and the router does not try.
	c = &clock{}
	a = newAdmitter(c, 0.25)
	teach(a, c, burn, 50*ms, 200*ms, 3)
	if got := a.Ahead(burn); got != 0 {
		t.Errorf("Ahead(burn) = %v for a CPU-bound kind; want 0", got)
	}
	if got := a.UsualAhead(); got != 0 {
		t.Errorf("UsualAhead = %v for a function of CPU-bound requests; want 0", got)
	}
	a.Take(burn)
	a.Hint(nil, 8)
	if got := a.RoomIn(nil); got != 0 {
		t.Errorf("RoomIn = %v beside a CPU-bound request; want 0", got)
	}
}
