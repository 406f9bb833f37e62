package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Launch is what one invocation is asked to be.
type Launch struct {
	Function       string
	MaxConcurrency int           // streams asked for
	Linger         time.Duration // end once idle this long
	// Warm asks the instance to stay until its deadline's drain, idle or
	// not: it is one of the function's minimum (Config.MinInstances).
	Warm bool
	// First, if not nil, is the request the invocation is launched for,
	// as an HTTP event, bound to it: the router claims it on a stream once
	// the tunnel is up, and the bootstrap runs it then.
	First []byte
}

// Launcher starts invocations that dial back.
type Launcher interface {
	// Prepare readies one invocation. It returns the id its tunnel will
	// present (Claims.ID) and a run function that invokes and blocks until
	// the invocation ends.
	Prepare(l Launch) (id string, run func(ctx context.Context) error, err error)
}

// FailingThreshold is how many launches in a row must fail before the
// pool takes the function to be failing.
const FailingThreshold = 3

// FailingError is Acquire's answer while the function's launches keep
// failing: requests fail at once instead of waiting out the queue timeout
// for an instance that will not come. Class names the failure (Lambda's
// error type, say Ferry.AppStartFailed), never its message.
type FailingError struct {
	Function string
	Class    string
}

func (e *FailingError) Error() string {
	return fmt.Sprintf("function %s is failing to start instances (%s)", e.Function, e.Class)
}

// failureClass names err for clients and metrics: its FailureClass if it
// has one, else a generic class.
func failureClass(err error) string {
	var c interface{ FailureClass() string }
	if errors.As(err, &c) && c.FailureClass() != "" {
		return c.FailureClass()
	}
	if err == nil {
		return "EndedWithoutTunnel"
	}
	return "LaunchFailed"
}

// errNoTunnel: the invocation ran, but its tunnel never came.
var errNoTunnel = launchError{"NoTunnel", "no tunnel within the launch timeout"}

type launchError struct{ class, msg string }

func (e launchError) Error() string        { return e.msg }
func (e launchError) FailureClass() string { return e.class }

// LaunchesNeeded is how many invocations to start so that pending ones
// cover the waiting requests: ceil(max(0, waiting - pending*limit) / limit).
func LaunchesNeeded(waiting, pending, limit int) int {
	uncovered := waiting - pending*limit
	if uncovered <= 0 {
		return 0
	}
	return (uncovered + limit - 1) / limit
}

// launchLocked starts the invocations the waiting requests need.
func (p *Pool) launchLocked() {
	pending := len(p.launches)
	sockets := 0
	for _, w := range p.waiters {
		if w.socket {
			sockets++
		}
	}
	// Requests take the pending launches first, each covering what its
	// CPU covers; sockets the launches left, each filling every slot an
	// instance takes.
	// A carried request takes its launch's first slot.
	requests, cover := len(p.waiters)-sockets+len(p.carried), p.launchCoverLocked()
	need := LaunchesNeeded(requests, pending, cover)
	left := max(pending-(requests+cover-1)/cover, 0)
	need += LaunchesNeeded(sockets, left, p.slotsLocked())
	if room := p.cfg.MaxInstances - len(p.instances) - pending - p.plain; need > room {
		need = max(room, 0)
	}
	p.startLaunchesLocked(need)
}

// slotsLocked is how many streams a new instance is expected to take:
// what the last one to join took (its function's FERRY_MAX_CONCURRENCY may
// be below what the router asks), else what the router asks.
func (p *Pool) slotsLocked() int {
	if p.lastLimit > 0 {
		return min(p.lastLimit, p.cfg.MaxConcurrency)
	}
	return p.cfg.MaxConcurrency
}

// startLaunchesLocked starts n invocations for waiting requests.
func (p *Pool) startLaunchesLocked(n int) {
	if n <= 0 {
		return
	}
	l := Launch{Function: p.cfg.Function, MaxConcurrency: p.cfg.MaxConcurrency, Linger: p.linger.choose()}
	if p.lingerUnsaid {
		// An older bootstrap, whose hello does not say its linger: the
		// pool cannot keep last tries off it near the end of a long one.
		l.Linger = min(l.Linger, startLinger)
	}
	for ; n > 0; n-- {
		w := p.carriableLocked()
		if w == nil {
			break
		}
		first, err := w.event()
		if err != nil {
			w.event = nil // travels as a stream
			p.log.Warn("a request could not be encoded for its launch to carry", "err", err)
			n++
			continue
		}
		l.First = first
		id, ok := p.prepareLocked(1, l)
		if !ok {
			return
		}
		w.launch = id
		p.carried[id] = w
		p.removeWaiterLocked(w)
		p.stats.Carried++
	}
	l.First = nil
	p.prepareLocked(n, l)
}

// carriableLocked returns the oldest waiting request a launch can carry,
// or nil.
func (p *Pool) carriableLocked() *waiter {
	for _, w := range p.waiters {
		if w.event != nil && !w.socket {
			return w
		}
	}
	return nil
}

// prepareLocked starts n invocations of l (after the failure backoff, if
// launches are failing).
// It returns the last one's id, and false if one could not be prepared.
func (p *Pool) prepareLocked(n int, l Launch) (id string, ok bool) {
	for range n {
		var run func(context.Context) error
		var err error
		id, run, err = p.cfg.Launcher.Prepare(l)
		if err != nil {
			p.log.Error("preparing invocation", "err", err)
			return "", false
		}
		p.launches[id] = time.Now()
		if l.Warm {
			p.warm.pending[id], p.warm.asked[id] = true, true
		}
		p.stats.Launches++
		go p.run(id, run, p.failureDelayLocked())
	}
	return id, true
}

// failureDelayLocked backs off launches after consecutive failures, so a
// broken function is not invoked in a tight loop while requests wait. It
// grows with each round of failures (see Pool.rounds): a hundred launches
// of a burst failing together do not hold the next off for 30 s.
func (p *Pool) failureDelayLocked() time.Duration {
	if p.rounds == 0 {
		return 0
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.RandomizationFactor = 100*time.Millisecond, 30*time.Second, 0.2
	b.Reset()
	var d time.Duration
	for range min(p.rounds, 20) {
		d = b.NextBackOff()
	}
	return d
}

func (p *Pool) run(id string, run func(context.Context) error, delay time.Duration) {
	if delay > 0 {
		time.Sleep(delay)
		p.mu.Lock()
		if _, pending := p.launches[id]; pending {
			p.launches[id] = time.Now() // the launch begins now: its time to join is from here
		}
		p.mu.Unlock()
	}
	// The invocation itself lasts until the instance ends it; the timeout
	// bounds only the wait for the tunnel, enforced below.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()

	timer := time.NewTimer(p.cfg.LaunchTimeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-errc:
	case <-timer.C:
		p.mu.Lock()
		_, pending := p.launches[id]
		p.mu.Unlock()
		if pending {
			p.log.Error("instance never dialed back", "after", p.cfg.LaunchTimeout)
			p.launchEnded(id, errNoTunnel)
		}
		err = <-errc
	}
	p.launchEnded(id, err)
}

// launchEnded settles a launch whose invocation ended (or timed out) before
// its tunnel arrived: the capacity it promised is gone, so the waiting
// requests may need another.
func (p *Pool) launchEnded(id string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	began, pending := p.launches[id]
	if !pending {
		if err != nil {
			p.log.Warn("invocation ended with an error", "err", err)
		}
		return
	}
	delete(p.launches, id)
	delete(p.warm.pending, id)
	delete(p.warm.asked, id)
	if w := p.carried[id]; w != nil {
		// The bootstrap runs a carried request only when the router
		// claims it, after the tunnel is up: it never ran.
		delete(p.carried, id)
		w.launch = ""
		if !p.closed {
			p.waiters = append([]*waiter{w}, p.waiters...)
		}
	}
	p.failures++
	if p.rounds == 0 || began.After(p.lastFailure) {
		p.rounds++
	}
	p.lastFailure = time.Now()
	p.stats.LaunchFailures++
	class := failureClass(err)
	if p.cfg.OnLaunchFailure != nil {
		p.cfg.OnLaunchFailure(class)
	}
	if p.closed {
		return
	}
	defer p.keepWarmLocked()
	if p.failures < FailingThreshold {
		p.log.Error("invocation ended without a tunnel", "class", class, "err", err, "waiting", len(p.waiters), "carried", len(p.carried))
		p.launchLocked()
		return
	}
	if len(p.launches) > 0 && p.failing == "" {
		// Launches still under way may yet bring instances (one failed
		// sandbox in a burst is not a broken function): wait for them,
		// starting no more.
		p.log.Error("invocation ended without a tunnel", "class", class, "err", err, "waiting", len(p.waiters), "carried", len(p.carried), "pending", len(p.launches))
		return
	}
	if p.failing == "" {
		p.log.Error("function failing: requests fail at once until a launch succeeds; launches back off",
			"class", class, "err", err, "failures", p.failures, "waiting", len(p.waiters), "carried", len(p.carried))
	} else {
		p.log.Warn("function still failing", "class", class, "err", err, "failures", p.failures, "next_launch_in", p.failureDelayLocked())
	}
	p.failing = class
	failed := &FailingError{Function: p.cfg.Function, Class: class}
	for _, w := range p.waiters {
		w.err = failed
		close(w.ch)
	}
	clear(p.waiters)
	p.waiters = p.waiters[:0]
}

// Ended learns from a tunnel invocation that ended: what it billed, its
// busy time, the linger it kept, how many requests it took, and whether it
// ended for idling. The pool weighs lingering against a new invocation's
// overhead, and tunnels against plain invocations, with it.
func (p *Pool) Ended(billed, busy, linger time.Duration, requests int64, idled bool) {
	p.mu.Lock()
	p.linger.ended(billed, busy, linger, idled)
	p.sharing.ended(requests)
	p.mu.Unlock()
}
