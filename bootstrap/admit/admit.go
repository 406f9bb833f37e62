// Package admit decides whether an instance should take one more request
// beside the ones it is running, from the CPU each kind of request has been
// seen to use.
//
// Sharing an invocation saves the time requests spend waiting on I/O; it
// costs whenever requests queue for the instance's vCPU. The Admitter
// learns, per kind of request (method, path and query; then method and
// path; then method and the path's first segment), how much CPU and wall
// time a request takes, from the sandbox's own CPU counter split among the requests in
// flight. It admits a request beside others only if the expected slowdown
// from sharing the vCPU stays within a small budget of every request's
// time, its own and each neighbour's. The first request of an idle
// instance always runs: a request that cannot share costs what one plain
// invocation costs. Until a kind is learnt, a request of it is judged by
// what its kind's requests in flight are doing: after a few ms of
// watching one, not beside it if it computes.
package admit

import (
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults.
const (
	// DefaultBudget is the share of a request's time that neighbours may
	// add to it by queueing for the CPU.
	DefaultBudget = 0.05
	// DefaultFloor is the slowdown always allowed, however short the
	// request: below a millisecond, scheduling noise dominates.
	DefaultFloor = time.Millisecond
	// DefaultPrior is the CPU per wall time assumed for a function before
	// any request of it finished: low, so that a cold burst of I/O-bound
	// requests packs; the first requests that finish correct it.
	DefaultPrior = 0.005
	// maxKinds bounds the kinds remembered, so that a client sending
	// endless distinct URLs cannot grow the table.
	maxKinds = 512
	// maxKey bounds the length of a kind's key.
	maxKey = 256
	// alpha weighs a new sample in each kind's moving average.
	alpha = 0.3
	// DefaultObserve is how long a request of a kind not yet learnt runs
	// before one more of its kind is judged beside it, with a counter of
	// nanosecond resolution: long enough that the CPU any request starts
	// with (its way through the bootstrap, the app's parsing) does not
	// pass for computing.
	DefaultObserve = 10 * time.Millisecond
	// computing is the share of its vCPU (of one, at most) a request of a
	// kind not yet learnt must have used, over its life and at least
	// Observe, to be taken as computing: another of its kind would queue
	// behind it.
	computing = 0.5
)

// Counter returns the CPU time used so far by everything the requests run
// on: the sandbox's cgroup, or the bootstrap and app processes.
type Counter func() time.Duration

// Config configures an Admitter.
type Config struct {
	// CPUs is the vCPU the instance has (memory/1769 on Lambda); if zero, 1.
	CPUs float64
	// Budget is the share of each request's time that sharing may add; if
	// zero, DefaultBudget.
	Budget float64
	// Floor is the slowdown always allowed; if zero, DefaultFloor.
	Floor time.Duration
	// Prior is the CPU per wall time of a function not yet seen; if zero,
	// DefaultPrior.
	Prior float64
	// Counter reads the CPU used. Required.
	Counter Counter
	// Own, if not nil, reads the part of Counter the bootstrap itself used
	// (taking streams in, proxying them) where the app runs in processes
	// of its own and Counter reads at fine resolution. It turns on the
	// watch over kinds not yet learnt (see Admit), which judges what the
	// requests made the app compute, not the bootstrap's work of a burst
	// arriving. Without it (an app in the bootstrap's own process, or
	// the 10 ms process counter) that watch is off.
	Own Counter
	// Observe is how long a request of a kind not yet learnt runs before
	// another of its kind is judged beside it (see Wait); if zero,
	// DefaultObserve.
	Observe time.Duration
	// Now is the clock; if nil, time.Now.
	Now func() time.Time
}

// Kind names what a request does, for learning its cost: the exact
// request, its method and path, and its method and first path segment
// (so /render/42 learns from /render/41).
type Kind struct{ Exact, Path, Segment string }

// KindOf returns r's kind.
func KindOf(r *http.Request) Kind {
	path := r.Method + " " + r.URL.Path
	exact := path
	if r.URL.RawQuery != "" {
		exact += "?" + r.URL.RawQuery
	}
	seg := r.URL.Path
	if i := strings.IndexByte(strings.TrimPrefix(seg, "/"), '/'); i >= 0 {
		seg = seg[:i+1]
	}
	return Kind{Exact: clip(exact), Path: clip(path), Segment: clip(r.Method + " " + seg + "/*")}
}

func (k Kind) keys() [3]string { return [3]string{k.Exact, k.Path, k.Segment} }

func clip(s string) string {
	if len(s) > maxKey {
		return s[:maxKey]
	}
	return s
}

// cost is what one request of a kind takes: CPU and wall time, in ns, and
// how far the CPU charged to one strays from the average (a moving mean of
// the absolute deviation): how far past its kind's CPU a request may be
// charged before it is taken to be of another kind.
type cost struct{ cpu, wall, dev float64 }

// rate is the share of one vCPU the request keeps busy while it runs.
func (c cost) rate() float64 {
	if c.wall <= 0 {
		return 0
	}
	return min(c.cpu/c.wall, 1)
}

type stats struct {
	avg cost
	n   int
}

func (s *stats) add(c cost) {
	if s.n == 0 {
		// One sample says nothing of the spread: start at a tenth.
		s.avg = cost{cpu: c.cpu, wall: c.wall, dev: c.cpu / 10}
	} else {
		s.avg.dev += alpha * (math.Abs(c.cpu-s.avg.cpu) - s.avg.dev)
		s.avg.cpu += alpha * (c.cpu - s.avg.cpu)
		s.avg.wall += alpha * (c.wall - s.avg.wall)
	}
	s.n++
}

// Admitter is safe for concurrent use.
type Admitter struct {
	cfg Config

	mu       sync.Mutex
	kinds    map[string]*stats    // guarded by mu; exact and path keys
	fn       stats                // guarded by mu; every request
	inflight map[*Ticket]struct{} // guarded by mu
	lastCPU  time.Duration        // guarded by mu; the counter at the last settle
	// The app's CPU since New (Counter less Own), as most seen at a
	// settle: reading the two at slightly different moments must not
	// add up to CPU the app never used.
	cpu0, own0 time.Duration // guarded by mu; Counter and Own at the baseline
	appSeen    float64       // guarded by mu; ns since the baseline
	// cold counts the requests in flight whose kind was not learnt when
	// they started: the app's CPU is followed (Own read) only while there
	// are some, from a baseline taken as the first of them starts.
	cold    int       // guarded by mu
	settled time.Time // guarded by mu; the last settle
}

// New returns an Admitter.
func New(cfg Config) *Admitter {
	if cfg.CPUs <= 0 {
		cfg.CPUs = 1
	}
	if cfg.Budget <= 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.Floor <= 0 {
		cfg.Floor = DefaultFloor
	}
	if cfg.Prior <= 0 {
		cfg.Prior = DefaultPrior
	}
	if cfg.Observe <= 0 {
		cfg.Observe = DefaultObserve
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Counter == nil {
		cfg.Counter = func() time.Duration { return 0 }
	}
	a := &Admitter{cfg: cfg, kinds: map[string]*stats{}, inflight: map[*Ticket]struct{}{}}
	a.lastCPU = cfg.Counter()
	return a
}

// Ticket is one admitted request. Call Done exactly once, when it ends.
type Ticket struct {
	a     *Admitter
	kind  Kind
	start time.Time
	est   cost    // expected, at admission
	cpu   float64 // ns attributed so far; guarded by a.mu
	app   float64 // of which the app's (less Config.Own); guarded by a.mu
	cold  bool    // its kind was not learnt when it started: watched
	once  sync.Once
}

// Admit admits a request of kind k unless running it beside the requests
// in flight would slow it or one of them by more than the budget. The
// first request always runs. A kind not yet learnt is not admitted beside
// a request of its kind that is computing: in a sandbox's first moments,
// a burst of CPU-bound requests would otherwise all run at once on its
// vCPU, each many times slower than alone. (Call Wait first to judge it on
// what that request has done.)
func (a *Admitter) Admit(k Kind) (*Ticket, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settleLocked()
	est, learnt := a.estimateLocked(k)
	if len(a.inflight) > 0 && ((!learnt && a.kindComputingLocked(k)) || !a.fitsLocked(est, nil)) {
		return nil, false
	}
	return a.startLocked(k, est, learnt), true
}

// Wait is how long to wait before Admit can judge a request of kind k on
// what its kind's requests in flight have done: when the kind is not yet
// learnt and the eldest of them has run less than Observe, the rest of
// that; else 0. It is 0 as soon as one of them is seen computing, and
// as soon as one finishes (the kind is learnt): call it again after a
// part of what it said.
func (a *Admitter) Wait(k Kind) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, learnt := a.estimateLocked(k); a.cfg.Own == nil || learnt {
		return 0
	}
	now := a.cfg.Now()
	if now.Sub(a.settled) >= time.Millisecond {
		// Many streams may be waiting, each asking every ms: read the
		// counter once a ms at most.
		a.settleLocked()
	}
	var eldest time.Duration
	seen := false
	for t := range a.inflight {
		if t.kind.shares(k) {
			if a.computingNowLocked(t, now) {
				return 0
			}
			eldest, seen = max(eldest, now.Sub(t.start)), true
		}
	}
	if !seen {
		return 0
	}
	return max(a.cfg.Observe-eldest, 0)
}

// kindComputingLocked reports, for a kind not yet learnt, whether a
// request of its kind in flight has, over its life, used at least half
// the vCPU it can have (of one, at most): it is computing, and another of
// its kind would queue behind it.
func (a *Admitter) kindComputingLocked(k Kind) bool {
	return a.cfg.Own != nil && a.computingLocked(func(t *Ticket) bool { return t.kind.shares(k) })
}

// computingLocked reports whether a request in flight that of says is
// computing (see computingNowLocked).
func (a *Admitter) computingLocked(of func(*Ticket) bool) bool {
	now := a.cfg.Now()
	for t := range a.inflight {
		if of(t) && a.computingNowLocked(t, now) {
			return true
		}
	}
	return false
}

// computingNowLocked reports whether t has made the app use at least half
// the vCPU it can have (of one, at most) over its life, or over Observe if
// it is younger: a request that starts with a ms of CPU and then waits is
// not computing.
func (a *Admitter) computingNowLocked(t *Ticket, now time.Time) bool {
	over := max(now.Sub(t.start), a.cfg.Observe)
	return t.app >= computing*min(a.cfg.CPUs, 1)*float64(over)
}

// Take admits a request of kind k whatever its cost: a request the router
// can send nowhere else, or one served directly.
func (a *Admitter) Take(k Kind) *Ticket {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settleLocked()
	est, learnt := a.estimateLocked(k)
	return a.startLocked(k, est, learnt)
}

// startLocked starts a request of kind k; learnt says its estimate is its
// kind's, not the prior. Call it just after a settle.
func (a *Admitter) startLocked(k Kind, est cost, learnt bool) *Ticket {
	t := &Ticket{a: a, kind: k, start: a.cfg.Now(), est: est, cold: !learnt}
	a.inflight[t] = struct{}{}
	if t.cold {
		a.cold++
		if a.cfg.Own != nil && a.cold == 1 {
			// The first watched: the counter was read as it was
			// admitted, the baseline of the app's CPU.
			a.cpu0, a.own0, a.appSeen = a.lastCPU, a.cfg.Own(), 0
		}
	}
	return t
}

// Done ends the request and teaches its kind what it cost.
func (t *Ticket) Done() {
	t.once.Do(func() {
		a := t.a
		a.mu.Lock()
		defer a.mu.Unlock()
		a.settleLocked()
		delete(a.inflight, t)
		if t.cold {
			a.cold--
		}
		c := cost{cpu: t.cpu, wall: float64(a.cfg.Now().Sub(t.start))}
		if c.wall <= 0 {
			return
		}
		a.fn.add(c)
		for _, key := range t.kind.keys() {
			if key == "" {
				continue
			}
			s := a.kinds[key]
			if s == nil {
				if len(a.kinds) >= maxKinds {
					continue
				}
				s = &stats{}
				a.kinds[key] = s
			}
			s.add(c)
		}
	})
}

// Hint reports the share of the instance's CPU that the requests in
// flight are expected to use, whether a request of the function's usual
// kind would be admitted now, and room: how many more of them would be,
// up to most (-1 when nothing has been learnt; with nothing else in
// flight at least 1, as the first request always runs). It leaves except,
// the request being answered, out: it is about to end.
func (a *Admitter) Hint(except *Ticket, most int) (utilization float64, fits bool, room int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settleLocked() // what the requests have used so far: a hint between answers sees them progress
	flight := a.flightLocked(except)
	fits = true
	if len(flight) > 0 {
		var demand float64
		for _, m := range flight {
			demand += m.rate
		}
		utilization = min(demand/a.cfg.CPUs, 1)
		fits = a.fits(append([]member{asMember(a.usualLocked())}, flight...))
		if a.cfg.Own != nil && a.fn.n == 0 && a.computingLocked(func(t *Ticket) bool { return t != except }) {
			// Nothing learnt, and a request computing: the next, likely
			// of its kind, would not be admitted (see Admit). The router
			// reads it as what a fresh sandbox takes at once.
			fits = false
		}
	}
	switch {
	case a.fn.n == 0:
		room = -1
	case most <= 0 || !fits: // learnt, the usual kind is the function's average: no room for one
	case len(flight) == 0:
		room = max(a.roomLocked(nil, most), 1)
	default:
		room = a.roomLocked(flight, most)
	}
	return utilization, fits, room
}

// RoomIn is how long from now until a request of the function's usual
// kind is expected to fit beside the requests in flight (less except):
// the CPU they have left to use beyond a little, on the vCPUs (no faster
// than one vCPU each). 0 when nothing has been learnt, or when what they
// have left cannot say why there is no room (they wait, or have run past
// their kind). Call it after Hint, which settles the counter.
func (a *Admitter) RoomIn(except *Ticket) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fn.n == 0 {
		return 0
	}
	// Once their CPU is behind them (each down to its floor, at the pace
	// that leaves), would the usual request fit? If not, what stands in
	// the way is not CPU that time will spend (CPU-bound work): it cannot
	// say.
	behind := []member{asMember(a.usualLocked())}
	var sum, most float64
	for _, m := range a.flightLocked(except) {
		left := max(m.left-m.floor, 0)
		sum += left
		most = max(most, left)
		behind = append(behind, m.behind())
	}
	if sum <= 0 || !a.fits(behind) {
		return 0
	}
	k := a.cfg.CPUs
	return min(time.Duration(max(sum/k, most/min(k, 1))), maxAhead)
}

// maxAhead bounds RoomIn and Ahead, below what a hint or a hello may say
// (15 minutes, Lambda's longest invocation).
const maxAhead = 10 * time.Minute

// Ahead is how long a request of kind k, started alone now, is expected
// to compute before its CPU is behind it but for a little (as RoomIn
// judges): 0 when the kind is not learnt.
func (a *Admitter) Ahead(k Kind) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	est, learnt := a.estimateLocked(k)
	if !learnt {
		return 0
	}
	return a.aheadLocked(est)
}

// UsualAhead is Ahead for a request of the function's usual kind: 0 until
// one has been learnt. The router may try one more request that long
// after it last sent one (tunnel.Load.Ahead).
func (a *Admitter) UsualAhead() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fn.n == 0 {
		return 0
	}
	return a.aheadLocked(a.fn.avg)
}

// aheadLocked is Ahead for a request costing est.
func (a *Admitter) aheadLocked(est cost) time.Duration {
	// As RoomIn: nothing to say if, even with its CPU behind it, a usual
	// request would not fit beside it (CPU-bound work).
	// A request of kind k just started, as flightLocked sees one.
	m := member{rate: est.rate(), left: est.cpu, wall: est.wall, owed: est.cpu, floor: est.cpu / 10}
	if !a.fits([]member{asMember(a.usualLocked()), m.behind()}) {
		return 0
	}
	return min(time.Duration(est.cpu*0.9/min(a.cfg.CPUs, 1)), maxAhead)
}

// roomLocked is how many requests of the function's average cost fit
// beside base, up to most. Fitting is monotone in their number: the
// largest that fits, by bisection.
func (a *Admitter) roomLocked(base []member, most int) int {
	m := asMember(a.fn.avg)
	return sort.Search(most, func(k int) bool {
		set := append(make([]member, 0, len(base)+k+1), base...)
		for range k + 1 {
			set = append(set, m)
		}
		return !a.fits(set)
	})
}

// Fits is how many requests of the function's usual kind fit at once, up
// to limit, from what has been learnt; 0 when nothing has been.
func (a *Admitter) Fits(limit int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fn.n == 0 {
		return 0
	}
	if limit <= 1 {
		return limit
	}
	return a.roomLocked(nil, limit) // one alone always fits
}

// settleLocked splits the CPU used since the last settle among the
// requests in flight, in proportion to how fast each is expected to be
// using CPU now (see pace), so that a light request running beside a heavy
// one is not taught that it is heavy, and one that has used what its kind
// takes (an API handler now waiting on its database) is not charged much
// of the computing of the requests that came after it. CPU used while
// nothing is in flight (the runtime's own work) is nobody's.
func (a *Admitter) settleLocked() {
	cpu := a.cfg.Counter()
	a.settled = a.cfg.Now()
	delta := float64(cpu - a.lastCPU)
	a.lastCPU = cpu
	var app float64 // the app's part of delta
	if a.cfg.Own != nil && a.cold > 0 {
		if seen := float64((cpu - a.cpu0) - (a.cfg.Own() - a.own0)); seen > a.appSeen {
			app, a.appSeen = seen-a.appSeen, seen
		}
	}
	if delta <= 0 || len(a.inflight) == 0 {
		return
	}
	now := a.cfg.Now()
	weights := make(map[*Ticket]float64, len(a.inflight))
	var total float64
	for t := range a.inflight {
		w := max(t.pace(now), 1e-3)
		weights[t] = w
		total += w
	}
	for t, w := range weights {
		t.cpu += delta * w / total
		t.app += app * w / total
	}
}

// pace is the share of a vCPU t is taken to be using now: its kind's
// rate, scaled down by the share of its CPU it has used, so that one that
// has done its computing counts for a tenth; one that has overrun its kind
// counts in full.
func (t *Ticket) pace(now time.Time) float64 {
	if t.overrun(now) || t.est.cpu <= 0 {
		return t.est.rate()
	}
	return t.est.rate() * min(t.leftCPU(now)/t.est.cpu, 1)
}

// overrun reports whether t has run well past its kind: in time, or in
// CPU beyond what the kind's spread explains. (The CPU is a share of a
// counter split among the requests in flight, so a request that shared the
// vCPU may be charged more than it used; its kind's spread says by how
// much.)
func (t *Ticket) overrun(now time.Time) bool {
	return t.cpu > overrun*t.est.cpu+2*t.est.dev || float64(now.Sub(t.start)) > overrun*t.est.wall
}

// estimateLocked is the expected cost of a request of kind k: its own
// kind's, else its path's, else its first segment's, else the prior. A
// kind never seen is not judged by the function's average: a quick
// CPU-only health check would make every new long-waiting path look
// CPU-bound. If it is heavy, its first run teaches so.
//
// learnt reports whether it is the kind's (a request of it has finished),
// not the prior.
func (a *Admitter) estimateLocked(k Kind) (est cost, learnt bool) {
	for _, key := range k.keys() {
		if s := a.kinds[key]; s != nil && s.n > 0 {
			return s.avg, true
		}
	}
	return a.priorLocked(), false
}

// shares reports whether k and o have a key in common: the same request,
// path or first segment.
func (k Kind) shares(o Kind) bool {
	for i, key := range k.keys() {
		if key != "" && key == o.keys()[i] {
			return true
		}
	}
	return false
}

func (a *Admitter) priorLocked() cost {
	wall := float64(100 * time.Millisecond)
	return cost{cpu: a.cfg.Prior * wall, wall: wall, dev: a.cfg.Prior * wall / 10}
}

// usualLocked is the function's average request, for the hint.
func (a *Admitter) usualLocked() cost {
	if a.fn.n > 0 {
		return a.fn.avg
	}
	return a.priorLocked()
}

// fitsLocked reports whether a request costing c can run beside the
// requests in flight (less except) with every one of them, and it, slowed
// by no more than its allowance.
//
// The model is processor sharing: on k vCPUs, up to floor(k) requests run
// at once unhindered; past that, a request whose remaining CPU work alone
// takes busy = cpu/min(k,1) of wall time is delayed by about
// busy × x/(1-x), where x is its neighbours' demand per vCPU, by no more
// than busy × (the neighbours past the free ones), which is what it would
// wait if each of them ran the whole time, and by no more than the CPU
// its neighbours have left to use, spread over the k vCPUs: a quick
// request cannot hold up a long one for longer than it runs.
func (a *Admitter) fitsLocked(c cost, except *Ticket) bool {
	return a.fits(append([]member{asMember(c)}, a.flightLocked(except)...))
}

// flightLocked is the requests in flight, less except, with the CPU each
// is expected still to use.
func (a *Admitter) flightLocked(except *Ticket) []member {
	set := make([]member, 0, len(a.inflight)+1)
	now := a.cfg.Now()
	for t := range a.inflight {
		if t != except {
			m := member{rate: t.pace(now), left: t.leftCPU(now), wall: t.est.wall, owed: t.est.cpu - t.cpu, floor: t.est.cpu / 10}
			if t.overrun(now) {
				m.owed, m.floor = m.left, m.left
			}
			set = append(set, m)
		}
	}
	return set
}

// behind is m once the CPU it has left is behind it but for its floor, at
// the pace that leaves.
func (m member) behind() member {
	if m.left > m.floor {
		m.rate *= m.floor / m.left
		m.left, m.owed = m.floor, min(m.owed, m.floor)
	}
	return m
}

// asMember is a request of cost c that has not started.
func asMember(c cost) member {
	return member{rate: c.rate(), left: c.cpu, wall: c.wall, owed: c.cpu, floor: c.cpu}
}

// leftCPU is the CPU t is expected still to use. What it has used is
// behind it: one that used what its kind takes, within its kind's time,
// is done computing but for a little (an API handler waiting on its
// database after its CPU). One that has run well past its kind (see
// overrun) is another kind than its key says (a 1.5 s request on a path
// whose requests took 150 ms): assume it is half way.
func (t *Ticket) leftCPU(now time.Time) float64 {
	if t.overrun(now) {
		return max(t.cpu, t.est.cpu/10)
	}
	return max(t.est.cpu-t.cpu, t.est.cpu/10)
}

// overrun: a request past this multiple of its kind's CPU or time is not
// of that kind.
const overrun = 1.5

// member is one request of a set that might run at once.
type member struct {
	rate, left, wall float64 // demand now (pace), CPU ns still to use, expected wall ns
	// owed is its kind's CPU less what it has been charged, which may be
	// negative: charges are shares of one counter, so what one was charged
	// too much another was charged too little, and owed sums true over
	// the set where each left alone would not. floor is the least it is
	// taken to have left.
	owed, floor float64
}

// fits reports whether the requests of set can run at once, each slowed by
// no more than its allowance.
func (a *Admitter) fits(set []member) bool {
	k := a.cfg.CPUs
	free := max(int(math.Floor(k))-1, 0)
	neighbours := len(set) - 1
	if neighbours <= free {
		return true
	}
	var demand, owed, floor float64
	for _, m := range set {
		demand += m.rate
		owed += m.owed
		floor += m.floor
	}
	crowd := float64(neighbours - free)
	for _, m := range set {
		x := (demand - m.rate) / k
		slow := crowd
		if x < 1 {
			slow = min(x/(1-x), crowd)
		}
		others := max(owed-m.owed, floor-m.floor) // the CPU the others have left
		extra := min(m.left/min(k, 1)*slow, others/k)
		allowed := max(a.cfg.Budget*m.wall, float64(a.cfg.Floor))
		if extra > allowed {
			return false
		}
	}
	return true
}
