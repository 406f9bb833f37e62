package pool

import (
	"math"
	"sync"

	"github.com/ferryrun/ferry/internal/tunnel"
)

// Lease is one stream slot on one instance, or leave for one plain
// invocation. Release it exactly once, when the stream (or the invocation)
// has ended.
type Lease struct {
	p        *Pool
	inst     *instance // nil for a plain invocation
	answered bool
	unsafe   bool
	claim    bool
	held     bool // a retry's, which had its one chance to wait for room due
	once     sync.Once
}

// Claim reports that the instance took the request: its invocation
// carried it (Launch.First). The stream sent on the lease claims it
// (tunnel.HeaderClaim), and the bootstrap runs it then; once that stream
// is sent the request is never sent elsewhere.
func (l *Lease) Claim() bool { return l.claim }

// DropCarried reports that the instance holds a request its invocation
// carried that the pool will never claim (its client left while the
// invocation started): the stream says so (tunnel.HeaderDropCarried), so
// that the bootstrap does not hold it for that claim.
func (l *Lease) DropCarried() bool { return l.inst != nil && l.inst.dropsCarried }

// NoHold marks the lease of a request its instance refused for a reason
// that room due on it will not mend (it is draining, its app is down): the
// retry does not wait for room due, there or elsewhere, as one nacked for
// CPU may once.
func (l *Lease) NoHold() { l.held = true }

// Conn returns the leased instance's tunnel; nil when Plain.
func (l *Lease) Conn() Conn {
	if l.inst == nil {
		return nil
	}
	return l.inst.conn
}

// Plain reports that the request is to travel as one plain invocation:
// an ordinary HTTP event in the invoke payload, served by a sandbox of its
// own, its response in the invoke result.
func (l *Lease) Plain() bool { return l.inst == nil }

// Answered notes, before Release, that the instance answered the request
// (not a nack), and whether the response could not have travelled in a
// plain invocation's result (over a MiB, streamed, with trailers): after
// one that could not, the function's requests stay on tunnels a while.
func (l *Lease) Answered(unsafe bool) { l.answered, l.unsafe = true, unsafe }

// Release frees the slot for the next waiting request, after a response
// or a nack; the instance's load hint on it teaches the pool how many
// requests an instance takes.
func (l *Lease) Release() {
	l.once.Do(func() {
		l.p.mu.Lock()
		if l.answered {
			l.p.sharing.response(l.unsafe, l.p.cfg.Now())
		}
		if l.inst == nil {
			l.p.plain--
			if len(l.p.waiters) > 0 && !l.p.closed {
				l.p.launchLocked() // its sandbox is free for an instance
			}
			l.p.mu.Unlock()
			return
		}
		if load, ok := l.inst.conn.Load(); ok {
			l.p.learnCoverLocked(load)
		}
		if l.answered {
			l.inst.answered = l.p.cfg.Now()
		}
		l.p.addInFlightLocked(l.inst, -1)
		l.p.dispatchLocked()
		if l.inst.inflight == 0 {
			// Gone or not: an instance told to linger 0 may end before
			// its last response has been read here.
			l.p.linger.wentIdle(l.p.cfg.Now())
			if l.inst.holds && !l.inst.warm {
				// Launched warm, no longer needed: it would idle to its
				// deadline.
				l.inst.holds = false
				go shutdown(l.inst.conn)
			}
		}
		l.p.mu.Unlock()
	})
}

// learnCoverLocked moves cover toward what a hint shows: an instance full
// at n streams covers n; one not full at n covers more than n.
func (p *Pool) learnCoverLocked(l tunnel.Load) {
	if l.Full {
		p.cover += 0.3 * (float64(max(l.InFlight, 1)) - p.cover)
		if p.fits == 0 {
			// No sandbox has said yet what fits at once (a cold
			// function): one full at n is the first word.
			p.fits = max(l.InFlight, 1)
		}
		return
	}
	if n := l.InFlight + 1; l.Room < 0 && p.fits > 0 && n > p.fits {
		// Not full at n, from an instance with no CPU opinion (admission
		// off, or nothing learnt yet): what fits is not what it said.
		p.fits = min(n, p.cfg.MaxConcurrency)
	}
	if n := float64(l.InFlight + 1); n > p.cover {
		p.cover = min(n, float64(p.cfg.MaxConcurrency))
	}
}

// firstCapLocked is how many streams in may hold before it can say how
// many it has room for: what its hello says fit at once; from a sandbox
// that has learnt nothing (and would admit anything on its prior), what
// the last sandbox that had learnt the function's requests said fit;
// failing that, what instances have been taking. (One more than the hello
// says was tried: api at 512 MB shared more, but CPU-bound requests
// bounced between fresh instances until their last try forced them onto
// busy ones, p50 7.6x plain Lambda's. A fresh sandbox given cover took 4
// or 5 of seed's 50 ms-CPU requests at once, each then 2.5-3x slower.)
// It is only for a sandbox that has not answered yet: one that answers
// with no room (CPU admission off, or nothing learnt) is held to its hello
// and cover as before, or p.fits would hold it for good.
func (p *Pool) firstCapLocked(in *instance, answered bool) int {
	f := in.conn.Hello().Fits
	if f <= 0 && !answered {
		f = p.fits
	}
	if f > 0 {
		return min(f, p.cfg.MaxConcurrency)
	}
	return p.coverLocked()
}

// coverLocked is cover as a whole number of requests, 1..MaxConcurrency.
func (p *Pool) coverLocked() int {
	return min(max(int(math.Round(p.cover)), 1), p.cfg.MaxConcurrency)
}

// launchCoverLocked is how many waiting requests one new invocation is
// launched for: cover, but no more than a fresh sandbox takes before its
// first answer (what fits at once, when known), so that a burst of
// requests that cannot share is launched an invocation each at once,
// not one after another as each new instance refuses all but one.
func (p *Pool) launchCoverLocked() int {
	if p.fits > 0 {
		return min(p.coverLocked(), p.fits)
	}
	return p.coverLocked()
}
