package pool

import (
	"context"
	"log/slog"
	"time"
)

// Add puts an instance in the pool. Call it only once the tunnel is fully
// established (tunnel.ServerConfig.OnConn guarantees that): an instance in
// the pool must be able to take a stream at once.
func (p *Pool) Add(conn Conn) {
	inst := &instance{conn: conn, limit: conn.Limit(), linger: -1}
	if l, ok := conn.Hello().Linger(); ok {
		inst.linger = l
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		conn.Close()
		return
	}
	launched, pending := p.launches[conn.Claims().ID]
	delete(p.launches, conn.Claims().ID)
	inst.warm, inst.joined = p.warm.pending[conn.Claims().ID], p.cfg.Now()
	inst.holds = p.warm.asked[conn.Claims().ID] // every warm launch is asked, pending or not
	delete(p.warm.pending, conn.Claims().ID)
	delete(p.warm.asked, conn.Claims().ID)
	if inst.warm && p.warmCoveringLocked() >= p.warm.min {
		inst.warm = false // the minimum dropped while it launched: an ordinary instance, closed once idle
	}
	if pending {
		p.launchTookLocked(time.Since(launched))
	}
	if p.failing != "" {
		p.log.Info("function recovered: an instance joined", "after_failures", p.failures)
	}
	p.failures, p.rounds, p.failing = 0, 0, ""
	p.stats.Joined++
	p.lastLimit = inst.limit
	p.lingerUnsaid = inst.linger < 0
	if f := conn.Hello().Fits; f > 0 {
		p.fits = f
	}
	if inst.limit < p.cfg.MaxConcurrency && !p.warned {
		// Each instance then covers fewer requests than launches assumed:
		// the pool launches more. Usually the function's own limit.
		p.warned = true
		p.log.Info("instances take fewer streams than the router asks: raise the function's FERRY_MAX_CONCURRENCY to match",
			"asked", p.cfg.MaxConcurrency, "took", inst.limit)
	}
	w := p.carried[conn.Claims().ID]
	inst.dropsCarried = conn.Hello().Carried && w == nil
	p.instances = append(p.instances, inst)
	p.placeLocked(inst)
	if w != nil {
		delete(p.carried, conn.Claims().ID)
		w.launch = ""
		if conn.Hello().Carried {
			// It took the request: the lease claims it on the tunnel,
			// and the bootstrap runs it then.
			w.claim = true
			p.addInFlightLocked(inst, 1)
			if conn.Hello().RoomInUs > 0 {
				inst.placed = inst.joined // the hello's room_in counts it
			}
			inst.served++
			w.ch <- inst
		} else {
			// A bootstrap that does not carry: the request goes first,
			// as a stream.
			w.event = nil
			p.waiters = append([]*waiter{w}, p.waiters...)
		}
	}
	p.dispatchLocked()
	surplus := inst.inflight == 0 && len(p.waiters) == 0 && !inst.warm
	warm := inst.warm
	if surplus {
		// Launched for requests that live instances served meanwhile (or
		// whose clients left): nothing wants it now, and every idle
		// moment of it is billed. Close it at once rather than let it
		// wait for a first stream.
		p.instances = p.instances[:len(p.instances)-1]
		p.unplaceLocked(inst)
		inst.gone = true
		p.stats.Surplus++
	} else {
		// The instance may take fewer streams than were asked of it.
		p.launchLocked()
	}
	p.mu.Unlock()
	if surplus {
		go shutdown(conn)
		return
	}
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		// The cold path, for make bench: launch (invoke, sandbox start,
		// bootstrap init, TCP connect) then the tunnel handshake.
		accepted, handshake := conn.Handshake()
		attrs := []any{"instance", conn.Hello().RequestID, "limit", inst.limit, "warm", warm, "handshake_us", handshake.Microseconds()}
		if pending {
			attrs = append(attrs, "launch_to_accept_us", accepted.Sub(launched).Microseconds())
		}
		p.log.Debug("instance joined", attrs...)
	}

	go func() {
		<-conn.Done()
		p.remove(inst)
	}()
	// Between answers, the instance's load stream says when it has room
	// again (its requests' CPU is behind them): waiting requests go then.
	go conn.WatchLoad(func() {
		p.mu.Lock()
		if len(p.waiters) > 0 {
			p.dispatchLocked()
		}
		p.mu.Unlock()
	})
}

// remove forgets an instance whose tunnel is gone; requests waiting for it
// may need a new invocation.
func (p *Pool) remove(inst *instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.instances {
		if x == inst {
			p.instances = append(p.instances[:i], p.instances[i+1:]...)
			p.unplaceLocked(inst)
			inst.gone = true
			break
		}
	}
	if p.closed {
		return
	}
	if inst.warm {
		p.warmEndedLocked(inst)
		p.keepWarmLocked()
	}
	if len(p.waiters) > 0 {
		p.launchLocked()
	}
}

// shutdown closes conn gracefully: its streams in flight may finish.
func shutdown(conn Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Shutdown(ctx)
}
