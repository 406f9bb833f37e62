package main

import (
	"math"
	"slices"
)

// The oracle: from a run's own arrival times and each request's CPU/wait
// profile, the least billed time a placement of requests onto invocations
// can reach if no request's CPU may wait more than Q in all, on instances
// of the function's vCPU, with no overhead and no linger.
//
// It places requests in arrival order, knowing each one's profile (which
// no real scheduler knows), on the invocation where it adds the least
// billed time, or on a new one. An invocation bills the union of its
// requests' lifetimes: with no linger, an idle gap costs nothing (it is a
// new invocation of a warm sandbox). CPU phases do not share a thread:
// each waits until one of its instance's slots is free, which is what
// makes sharing cost latency, and what Q bounds.

// phase is one step of a request: CPU (ms of CPU time) or a wait (ms).
type phase struct {
	cpu bool
	ms  float64
}

// oracleRequest is one request of a trace.
type oracleRequest struct {
	at     float64 // arrival, ms from the start of the run
	phases []phase
}

// nominal is the request's duration alone on an instance of vcpu vCPUs:
// a CPU phase runs on one thread at min(1, vcpu) of a core.
func nominal(ph []phase, vcpu float64) float64 {
	d := 0.0
	for _, p := range ph {
		if p.cpu {
			d += p.ms / min(1, vcpu)
		} else {
			d += p.ms
		}
	}
	return d
}

// oracleInstance is one invocation's schedule.
type oracleInstance struct {
	// slots[k] are the busy intervals of CPU thread k, sorted, disjoint.
	slots [][]interval
	// busy is the union of its requests' lifetimes, sorted, disjoint.
	busy []interval
}

type interval struct{ from, to float64 }

// oracleBilled returns the least billed ms the greedy clairvoyant
// placement reaches for reqs on instances of vcpu vCPUs, letting each
// request finish at most q ms after it would alone.
func oracleBilled(reqs []oracleRequest, vcpu, q float64) float64 {
	threads := max(1, int(math.Floor(vcpu+1e-9)))
	rate := min(1, vcpu)
	var live []*oracleInstance
	billed := 0.0
	for _, r := range reqs {
		alone := nominal(r.phases, vcpu)
		// Instances whose last lifetime ended before this arrival add the
		// same as a new one: drop them from the search.
		live = slices.DeleteFunc(live, func(in *oracleInstance) bool {
			return in.busy[len(in.busy)-1].to <= r.at
		})
		var best *oracleInstance
		var bestPlan []interval
		bestCost := alone // a new invocation: its whole lifetime
		var bestEnd float64
		for _, in := range live {
			plan, end, ok := in.fit(r, rate, q+1e-9, alone)
			if !ok {
				continue
			}
			if cost := added(in.busy, interval{r.at, end}); cost < bestCost-1e-9 {
				best, bestPlan, bestCost, bestEnd = in, plan, cost, end
			}
		}
		if best == nil {
			best = &oracleInstance{slots: make([][]interval, threads)}
			bestPlan, bestEnd = best.plan(r, rate)
			live = append(live, best)
		}
		best.reserve(bestPlan)
		best.busy = union(best.busy, interval{r.at, bestEnd})
		billed += bestCost
	}
	return billed
}

// fit plans r on in and reports whether it finishes within q of alone.
func (in *oracleInstance) fit(r oracleRequest, rate, q, alone float64) ([]interval, float64, bool) {
	plan, end := in.plan(r, rate)
	return plan, end, end-r.at-alone <= q
}

// plan schedules r's phases on in at the earliest free times, each CPU
// phase on the thread that frees first, and returns the CPU phases'
// intervals and when r ends.
func (in *oracleInstance) plan(r oracleRequest, rate float64) ([]interval, float64) {
	var plan []interval
	t := r.at
	for _, p := range r.phases {
		if !p.cpu {
			t += p.ms
			continue
		}
		d := p.ms / rate
		start := math.Inf(1)
		for _, s := range in.slots {
			start = min(start, earliest(s, t, d))
		}
		plan = append(plan, interval{start, start + d})
		t = start + d
	}
	return plan, t
}

// reserve books the CPU phases of a plan, each on the first thread free
// for all of it (the one plan chose).
func (in *oracleInstance) reserve(plan []interval) {
	for _, p := range plan {
		for k, s := range in.slots {
			if earliest(s, p.from, p.to-p.from) == p.from {
				in.slots[k] = union(s, p)
				break
			}
		}
	}
}

// earliest is the first time >= t at which s has d free.
func earliest(s []interval, t, d float64) float64 {
	for _, iv := range s {
		if iv.to <= t {
			continue
		}
		if t+d <= iv.from+1e-9 {
			return t
		}
		t = max(t, iv.to)
	}
	return t
}

// added is how much of iv lies outside the union busy.
func added(busy []interval, iv interval) float64 {
	out := iv.to - iv.from
	for _, b := range busy {
		lo, hi := max(b.from, iv.from), min(b.to, iv.to)
		if hi > lo {
			out -= hi - lo
		}
	}
	return max(out, 0)
}

// union adds iv to a sorted disjoint list, merging overlaps.
func union(s []interval, iv interval) []interval {
	out := s[:0:0]
	placed := false
	for _, x := range s {
		switch {
		case x.to < iv.from:
			out = append(out, x)
		case iv.to < x.from:
			if !placed {
				out = append(out, iv)
				placed = true
			}
			out = append(out, x)
		default:
			iv = interval{min(iv.from, x.from), max(iv.to, x.to)}
		}
	}
	if !placed {
		out = append(out, iv)
	}
	return out
}
