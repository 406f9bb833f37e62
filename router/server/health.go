package server

import (
	"sync"
	"time"
)

// lambdaHealth says whether this router can launch instances: not when
// every call to the Lambda API has failed, for a reason that says the
// region's Lambda is failing (an account-level throttle, Lambda's own
// error, no connection: invoke's regional), for a while. Then /readyz
// says not ready, so that health checks move traffic to another region.
// A call that works ends it. With no traffic, nothing calls Lambda to
// find out: so it also ends holdFactor times the while after the last
// failure, and traffic comes back to try again.
type lambdaHealth struct {
	after time.Duration // 0: never unready

	mu           sync.Mutex
	failingSince time.Time // start of the failures since the last call that worked; zero if none
	lastFailure  time.Time
	lastOK       time.Time
}

// holdFactor: how many times its while unreadiness lasts after the last
// failure seen.
const holdFactor = 4

// ok records a call to Lambda that worked (an instance dialed back, an
// invocation answered).
func (h *lambdaHealth) ok() {
	h.mu.Lock()
	h.failingSince, h.lastOK = time.Time{}, time.Now()
	h.mu.Unlock()
}

// recentlyOK reports whether a call worked within the while: then a
// peer's failures are its own, not the region's.
func (h *lambdaHealth) recentlyOK(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.lastOK.IsZero() && now.Sub(h.lastOK) < h.after
}

// failed records a call Lambda did not take.
func (h *lambdaHealth) failed() {
	now := time.Now()
	h.mu.Lock()
	if h.failingSince.IsZero() || now.Sub(h.lastFailure) >= holdFactor*h.after {
		h.failingSince = now // a new while: the last one is past its hold
	}
	h.lastFailure = now
	h.mu.Unlock()
}

// failing returns how long calls have failed, if that makes the router
// unready now. Past the hold the failures are forgotten: a later one
// starts a new while.
func (h *lambdaHealth) failing(now time.Time) (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.after <= 0 || h.failingSince.IsZero() {
		return 0, false
	}
	if now.Sub(h.lastFailure) >= holdFactor*h.after {
		h.failingSince = time.Time{}
		return 0, false
	}
	d := now.Sub(h.failingSince)
	return d, d >= h.after
}
