package pool

import (
	"time"
)

// Warm instances: a function's minimum of live instances, kept whatever the
// traffic (Config.MinInstances), so that a request after a silence finds
// one instead of a cold start. Each is asked to stay until the drain
// before its deadline, idle or not, and is replaced before then: the
// replacement is launched while the old one still serves, early enough
// for a cold start to finish. Every idle moment of them is billed; the
// router's IdleMs metric shows what that costs.

const (
	// warmCheck is how often the pool looks for warm instances near their
	// deadline.
	warmCheck = time.Second
	// defaultLaunchLead is the time a launch is assumed to take to join
	// until launches have been seen.
	defaultLaunchLead = 3 * time.Second
	// maxWarmBackoff bounds the wait before replacing a warm instance that
	// ended early (it did not stay until its deadline): at most one launch
	// per minimum slot per this long, so an instance that keeps ending at
	// once cannot run up invocations in a loop.
	maxWarmBackoff = time.Minute
)

// warmState is the pool's record of its warm instances.
type warmState struct {
	min     int             // the minimum asked for
	pending map[string]bool // launch ids of warm launches not yet joined
	// asked holds every warm launch not yet joined, pending or dropped
	// from pending when the minimum fell: its instance stays until its
	// deadline unless the pool closes it.
	asked map[string]bool
	// lead is how long launches have taken to join (the slowest of the
	// recent ones, decaying): how far ahead of a deadline to replace.
	lead time.Duration
	// early counts warm instances in a row that ended well before their
	// deadline; notBefore delays the next warm launch after one did.
	early     int
	notBefore time.Time
	// stop, while a checker goroutine runs, ends it.
	stop chan struct{}
}

// SetMinInstances changes the minimum of live instances the pool keeps (0:
// none, the default). Raising it launches at once; lowering it closes the
// warm instances beyond it, gracefully (their requests finish), since
// nothing else would end them before their deadlines.
func (p *Pool) SetMinInstances(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n = max(0, min(n, p.cfg.MaxInstances))
	if n == p.warm.min {
		return
	}
	p.log.Info("minimum of live instances", "min_instances", n, "was", p.warm.min)
	p.warm.min = n
	// Keep the fresh ones first, then those due for replacement, then the
	// launches under way; close or forget the rest.
	p.warmCoveringLocked() // marks those due
	kept := 0
	for _, replaced := range []bool{false, true} {
		for _, in := range p.instances {
			if !in.warm || in.replaced != replaced {
				continue
			}
			if kept < n {
				kept++
				continue
			}
			in.warm = false // its end is no early one
			go shutdown(in.conn)
		}
	}
	for id := range p.warm.pending {
		if kept < n {
			kept++
			continue
		}
		delete(p.warm.pending, id) // it joins as an ordinary instance, closed once idle
	}
	p.keepWarmLocked()
}

// keepWarmLocked launches what the minimum lacks: warm instances that are
// live and not near their deadline, plus warm launches pending, must make
// up the minimum.
func (p *Pool) keepWarmLocked() {
	if p.closed || p.warm.min == 0 {
		p.stopWarmLocked()
		return
	}
	if p.warm.stop == nil {
		p.warm.stop = make(chan struct{})
		go p.tickWarm(p.warm.stop)
	}
	if p.failing != "" && len(p.launches) > 0 {
		return // one launch at a time, backed off, finds out whether it works again
	}
	now := p.cfg.Now()
	need := p.warm.min - len(p.warm.pending) - p.warmCoveringLocked()
	if room := p.cfg.MaxInstances - len(p.instances) - len(p.launches) - p.plain; need > room {
		need = room
	}
	if now.Before(p.warm.notBefore) {
		// Backing off after early ends: only the replacements of
		// instances still live go now (their slots were not lost).
		due := 0
		for _, in := range p.instances {
			if in.warm && in.replaced {
				due++
			}
		}
		need = min(need, due-len(p.warm.pending))
	}
	if p.failures > 0 {
		need = min(need, 1) // while launches fail, one at a time finds out
	}
	if need <= 0 {
		return // the next check launches, after a backoff
	}
	p.prepareLocked(need, Launch{Function: p.cfg.Function, MaxConcurrency: p.cfg.MaxConcurrency, Warm: true})
}

// warmCoveringLocked counts the warm instances live and not yet due for
// replacement, marking those due for good (a lead that shrinks later must
// not make one count again once its replacement is under way).
func (p *Pool) warmCoveringLocked() int {
	now, n := p.cfg.Now(), 0
	for _, in := range p.instances {
		if !in.warm || in.replaced {
			continue
		}
		if in.conn.Draining() || in.conn.Deadline().Sub(now) <= p.replaceAheadLocked(in) {
			in.replaced = true
			continue
		}
		n++
	}
	return n
}

// replaceAheadLocked is how long before in's deadline its replacement is
// launched: the drain margin its bootstrap keeps by default (a tenth of
// its timeout, 1 s to 15 s), plus the time launches take to join, plus a
// second to spare; at most half its time, so that a short timeout does
// not make every instance due as it joins.
func (p *Pool) replaceAheadLocked(in *instance) time.Duration {
	timeout := in.conn.Deadline().Sub(in.joined)
	margin := min(max(timeout/10, time.Second), 15*time.Second)
	lead := p.warm.lead
	if lead == 0 {
		lead = defaultLaunchLead
	}
	return min(margin+lead+time.Second, timeout/2)
}

// launchTookLocked learns from a launch that joined after took.
func (p *Pool) launchTookLocked(took time.Duration) {
	// The slowest recent launch, decaying by a tenth per launch: a cold
	// start now and then keeps the lead long enough for the next.
	p.warm.lead = max(took, p.warm.lead-p.warm.lead/10)
}

// warmEndedLocked learns from a warm instance that is gone: one that went
// before it was due for replacement (an old bootstrap that ignores warm, a
// crash) backs the next warm launch off, so that instances that keep
// ending cannot launch in a loop.
func (p *Pool) warmEndedLocked(in *instance) {
	now := p.cfg.Now()
	if in.replaced || in.conn.Deadline().Sub(now) <= p.replaceAheadLocked(in) {
		p.warm.early = 0
		return
	}
	p.warm.early++
	backoff := min(time.Second<<min(p.warm.early-1, 6), maxWarmBackoff)
	p.warm.notBefore = now.Add(backoff)
	p.log.Warn("a warm instance ended before its deadline; replacing it after a backoff",
		"instance", in.conn.Hello().RequestID, "left_ms", in.conn.Deadline().Sub(now).Milliseconds(),
		"in_a_row", p.warm.early, "backoff", backoff)
}

// tickWarm replaces warm instances as their deadlines near, until stop
// closes.
func (p *Pool) tickWarm(stop <-chan struct{}) {
	t := time.NewTicker(warmCheck)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		p.keepWarmLocked()
		p.mu.Unlock()
	}
}

// stopWarmLocked ends the checker goroutine, if one runs.
func (p *Pool) stopWarmLocked() {
	if p.warm.stop != nil {
		close(p.warm.stop)
		p.warm.stop = nil
	}
}
