package pool

import (
	"sort"
	"time"
)

// lingerModel chooses how long a new instance stays with nothing in flight
// before it ends its invocation. Lingering bills every idle moment; ending
// bills a new invocation's own overhead (the tunnel's set-up and drain)
// when the next request comes. For Poisson arrivals the best linger is 0
// below about 1/overhead requests a second and "stay" above it; for clients
// that send their next request a moment after the last answer it is just
// over that moment. The model needs no assumption: it keeps the gaps it
// saw between an instance going idle and the next request that needed an
// idle or new instance, and the overhead recent invocations cost beyond
// their busy time, and picks the linger (up to max) with the least expected
// billed time over those gaps.
//
// Not safe for concurrent use: the pool calls it under its lock.
type lingerModel struct {
	max time.Duration

	gaps  [lingerSamples]time.Duration // ring of recent gaps
	nGaps int                          // samples in gaps, up to lingerSamples
	next  int                          // where the next sample goes
	// idle holds the moments instances went idle that no request has met
	// yet, oldest first. Bounded: the oldest are counted as long gaps.
	idle []time.Time
	// overhead is a moving average of what an invocation ended for idling
	// billed beyond its busy time and its linger; 0 until one is seen.
	overhead time.Duration
}

const (
	lingerSamples = 64
	// minLingerSamples gaps are needed before the model moves off max.
	minLingerSamples = 8
	// longGap stands for a gap no arrival has closed within it: longer
	// than any linger worth keeping.
	longGap = time.Second
	// startLinger is what a new instance is asked before the model has
	// learnt (up to max): about what a warm re-invoke costs, so a guess
	// can cost little more than a new invocation would.
	startLinger = 2 * time.Millisecond
)

func newLingerModel(max time.Duration) *lingerModel {
	return &lingerModel{max: max}
}

func (m *lingerModel) addGap(g time.Duration) {
	m.gaps[m.next] = g
	m.next = (m.next + 1) % lingerSamples
	m.nGaps = min(m.nGaps+1, lingerSamples)
}

// wentIdle records that an instance has nothing in flight as of now.
func (m *lingerModel) wentIdle(now time.Time) {
	if len(m.idle) == lingerSamples {
		m.addGap(longGap)
		m.idle = append(m.idle[:0], m.idle[1:]...)
	}
	m.idle = append(m.idle, now)
}

// arrived records a request that needed an idle or new instance: it meets
// the latest idle moment. Idle moments older than longGap met nobody.
func (m *lingerModel) arrived(now time.Time) {
	stale := 0
	for stale < len(m.idle) && now.Sub(m.idle[stale]) >= longGap {
		m.addGap(longGap)
		stale++
	}
	m.idle = append(m.idle[:0], m.idle[stale:]...)
	if n := len(m.idle); n > 0 {
		m.addGap(now.Sub(m.idle[n-1]))
		m.idle = m.idle[:n-1]
	}
}

// ended learns an invocation's overhead from what it billed, its busy time
// and the linger it kept. Only invocations that ended for idling count (a
// drained or closed one did not pay its linger), and only from bootstraps
// that report their busy time.
func (m *lingerModel) ended(billed, busy, linger time.Duration, idled bool) {
	if !idled || billed <= 0 || busy <= 0 {
		return
	}
	o := max(billed-busy-linger, 0)
	if m.overhead == 0 {
		m.overhead = o
		return
	}
	m.overhead += (o - m.overhead) / 5
}

// choose returns the linger for a new instance.
func (m *lingerModel) choose() time.Duration {
	if m.nGaps < minLingerSamples || m.overhead == 0 || m.max <= 0 {
		return min(startLinger, max(m.max, 0))
	}
	gaps := append([]time.Duration(nil), m.gaps[:m.nGaps]...)
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	// cost(L) = Σ over gaps: the gap itself if the linger covers it, else
	// the linger and a new invocation's overhead. Ties go to the longer
	// linger: a request it catches is also served sooner.
	cost := func(l time.Duration) time.Duration {
		var c time.Duration
		for _, g := range gaps {
			if g <= l {
				c += g
			} else {
				c += l + m.overhead
			}
		}
		return c
	}
	best, bestCost := time.Duration(0), cost(0)
	try := func(l time.Duration) {
		if l > m.max {
			return
		}
		if c := cost(l); c <= bestCost {
			best, bestCost = l, c
		}
	}
	// Between gaps the cost only grows with the linger, so the best is 0
	// or a gap.
	for _, g := range gaps {
		try(g)
	}
	// Caught at exactly its gap, a request would race the instance's
	// timer: keep a quarter more.
	return min(best+best/4, m.max)
}

// state is what the pool's admin view shows of the model.
func (m *lingerModel) state() (linger, overhead time.Duration, samples int) {
	return m.choose(), m.overhead, m.nGaps
}
