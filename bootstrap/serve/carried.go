package serve

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// claimWait bounds how long a carried request waits for the router's
// claim once the tunnel is up: past it, a router that never claims cannot
// keep the invocation (billed) alive.
const claimWait = firstStreamGrace

// carried is the request a dial-back event brought (dialback.Payload.First).
// It runs on the stream the router opens to claim it (tunnel.HeaderClaim),
// in place of that stream's own request, and not before: started before
// the session was up, it would overlap the handshake and the session's
// start, whose CPU admission would charge to it (under -race a 10 ms
// request at 0.29 vCPU was learnt as 27 ms), and a failed invocation could
// not say whether it had run.
type carried struct {
	req *http.Request

	mu sync.Mutex
	// claimed: a claim has taken it; gone: it was given up unrun.
	claimed, gone bool // guarded by mu
	// settled is closed once it was claimed or given up: streams that
	// come before its claim wait for it, so that they are judged beside
	// it (it runs whatever the CPU) and not it beside them.
	settled     chan struct{}
	settledOnce sync.Once
}

// carry keeps req, the request the dial-back event carried, for the
// router's claim.
func (s *streams) carry(req *http.Request) {
	c := &carried{req: req, settled: make(chan struct{})}
	s.mu.Lock()
	s.carried = c
	s.mu.Unlock()
}

// take marks c claimed; false if a claim took it already or it was given
// up.
func (c *carried) take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claimed || c.gone {
		return false
	}
	c.claimed = true
	c.settledOnce.Do(func() { close(c.settled) })
	return true
}

// unclaimed reports whether c still waits for a claim.
func (c *carried) unclaimed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.claimed && !c.gone
}

// giveUp drops c unrun, if no claim took it; it reports whether it did.
func (c *carried) giveUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := !c.claimed && !c.gone
	c.gone = true
	c.settledOnce.Do(func() { close(c.settled) })
	return was
}

// takeCarried returns the carried request for the claim stream whose
// context is ctx, to run on it; false when there is none to claim (the
// bootstrap carried nothing, or a claim took it already, or it was given
// up because its claim came too late).
func (s *streams) takeCarried(ctx context.Context) (*http.Request, bool) {
	c := s.carriedRequest()
	if c == nil || !c.take() {
		return nil, false
	}
	// The stream's context: the router leaving cancels it, as for any
	// stream.
	return c.req.WithContext(ctx), true
}

// dropCarried gives the carried request up unrun, as the router said
// (tunnel.HeaderDropCarried): it will never claim it.
func (s *streams) dropCarried() {
	if c := s.carriedRequest(); c != nil && c.giveUp() {
		s.log.Info("the router will not claim the carried request (its client left): dropped unrun")
	}
}

// awaitingClaim reports whether a carried request waits for its claim;
// one that waited past claimWait since the tunnel came up is given up.
func (s *streams) awaitingClaim(up time.Time) bool {
	c := s.carriedRequest()
	if c == nil || !c.unclaimed() {
		return false
	}
	if time.Since(up) < claimWait {
		return true
	}
	if c.giveUp() {
		s.log.Warn("the router never claimed the carried request: dropped unrun", "waited", time.Since(up).Round(time.Millisecond))
	}
	return false
}

// awaitCarried holds a stream that came before the carried request's
// claim until that request was claimed (or given up), so that the stream
// is judged beside it; false if the router gave up on the stream
// meanwhile. The router claims as the tunnel joins: the wait is short.
func (s *streams) awaitCarried(ctx context.Context) bool {
	c := s.carriedRequest()
	if c == nil {
		return true
	}
	select {
	case <-c.settled:
		return true
	default:
	}
	s.held.Add(1)
	defer func() {
		s.held.Add(-1)
		s.poke()
	}()
	select {
	case <-c.settled:
		return true
	case <-ctx.Done():
		return false
	}
}

// carriedRequest returns the carried request, or nil.
func (s *streams) carriedRequest() *carried {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.carried
}
