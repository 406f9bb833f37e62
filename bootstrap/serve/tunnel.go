package serve

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ferryrun/ferry/bootstrap/admit"
	"github.com/ferryrun/ferry/bootstrap/direct"
	"github.com/ferryrun/ferry/bootstrap/runtimeapi"
	"github.com/ferryrun/ferry/internal/dialback"
	"github.com/ferryrun/ferry/internal/tunnel"
)

// postSafety is kept between the end of the drain and the deadline, for
// closing the tunnel and posting the response.
const postSafety = 100 * time.Millisecond

// firstStreamGrace is how long a new tunnel waits for its first stream
// however short the linger. The router hands a waiting request to a new
// instance the moment its tunnel is up, and closes at once an instance
// that arrives to find nothing waiting; but a busy router may take tens of
// milliseconds to open the first stream (20 ms lost whole bursts on a
// loaded test machine), so this only bounds what a router that never
// sends one can cost.
const firstStreamGrace = 500 * time.Millisecond

// Summary is the response of a dial-back invocation (see dialback.Summary).
type Summary = dialback.Summary

// phases is where a tunnel invocation's time went outside its requests:
// what an invocation costs beyond the requests it carries.
type phases struct {
	// setup: from the event to the tunnel's hello accepted (dial, TLS,
	// hello); toFirst: from then to the first stream running (zero if
	// none ran); drain: from the decision to end to the tunnel closed.
	setup, toFirst, drain time.Duration
}

func (p phases) logAttrs() []any {
	return []any{"setup_us", p.setup.Microseconds(), "to_first_stream_us", p.toFirst.Microseconds(), "drain_us", p.drain.Microseconds()}
}

// serveTunnel dials the router and serves streams until the instance has
// been idle for the linger, the deadline is within the drain margin, or the
// router closes the tunnel. It returns only after the tunnel is closed.
func (r *runner) serveTunnel(ctx context.Context, inv *runtimeapi.Invocation, p dialback.Payload, log *slog.Logger) (Summary, phases, error) {
	var ph phases
	began := time.Now()
	timeout := time.Until(inv.Deadline)
	margin := r.cfg.DrainMarginFor(timeout)
	limit := r.cfg.MaxConcurrency
	if p.MaxConcurrency > 0 && p.MaxConcurrency < limit {
		limit = p.MaxConcurrency
	}
	st := newStreams(r.opts.Handler, limit, inv.Deadline, r.adm, r.cfg.CPUAdmission)
	st.dialApp, st.log = r.dialApp, log
	// The time background work alone keeps the invocation going: what
	// waitUntil adds to the bill beyond the requests.
	var alone aloneClock
	st.onBusy = alone.requests
	r.bg.SetHook(alone.background)
	defer r.bg.SetHook(nil)
	linger := r.cfg.IdleLinger
	if l, ok := p.Linger(); ok && !r.cfg.IdleLingerSet {
		linger = l
	}
	if p.Warm {
		// One of the function's minimum: idle is what it is for. It ends
		// at the drain before its deadline (or when the router closes it).
		linger = max(time.Until(inv.Deadline), linger)
	}
	hello := tunnel.Hello{
		Token: p.Token, FunctionARN: inv.FunctionARN, RequestID: inv.RequestID,
		MaxConcurrency: limit, DeadlineUnixMs: inv.Deadline.UnixMilli(), MemoryMB: r.opts.MemoryMB,
		Fits: r.fits(limit), LoadStream: r.cfg.LoadStream,
		// The router keeps a stream it cannot send again off an idle
		// instance near the end of this.
		LingerUs: new(linger.Microseconds()),
	}
	if r.cfg.CPUAdmission {
		// What this sandbox has learnt of the usual request's CPU: the
		// router may try one more that long after it sends one.
		hello.AheadUs = r.adm.UsualAhead().Microseconds()
	}
	var first *http.Request
	if len(p.First) > 0 {
		// The request the router launched this invocation for: the app
		// starts it when the router claims it. One the bootstrap cannot
		// read the router sends as a stream instead (the hello does not
		// say carried).
		if req, _, _, err := direct.Request(ctx, p.First); err != nil {
			log.Warn("the dial-back event's first request could not be read: the router will send it", "err", err)
		} else {
			first = req.WithContext(context.WithValue(req.Context(), http.ServerContextKey, r.server))
			hello.Carried = true
			if r.cfg.CPUAdmission {
				// When one may fit beside it: once its CPU is behind it.
				hello.RoomInUs = r.adm.Ahead(admit.KindOf(first)).Microseconds()
			}
		}
	}
	nc, err := tunnel.Dial(ctx, tunnel.DialConfig{Addr: p.Router, Pin: p.Pin, Timeout: r.cfg.DialTimeout, Hello: hello})
	if err != nil {
		// The carried request never ran: the router may send it again
		// (dialback.NotRun).
		return Summary{}, ph, err
	}
	if first != nil {
		st.carry(first)
	}
	up := time.Now()
	ph.setup = up.Sub(began)

	streams := limit
	if r.cfg.LoadStream {
		streams++ // and the load stream
	}
	sess := tunnel.NewSession(nc, streams)
	go sess.Serve(ctx, st)

	drainAt := inv.Deadline.Add(-margin)
	deadline := time.NewTimer(time.Until(drainAt))
	defer deadline.Stop()
	// The linger is timed from the moment the instance went idle. Before
	// its first stream, it waits at least firstStreamGrace: the router
	// sends the request that launched it as soon as the tunnel is up.
	idle := time.NewTimer(max(linger, firstStreamGrace))
	defer idle.Stop()

	// quiet is how long the instance has had no request in flight and no
	// background work pending, and false while it has either.
	quiet := func() (time.Duration, bool) {
		bgSince, bgIdle := r.bg.IdleSince()
		if !bgIdle || st.inFlight() > 0 || st.holding() || st.awaitingClaim(up) {
			return 0, false
		}
		d := st.idleFor()
		if !bgSince.IsZero() {
			d = min(d, time.Since(bgSince))
		}
		return d, true
	}
	rearm := func() {
		d, ok := quiet()
		if !ok {
			idle.Stop()
			if st.awaitingClaim(up) {
				// Looked at again once the claim is overdue.
				idle.Reset(max(claimWait-time.Since(up), 0))
			}
			return
		}
		wait := linger - d
		if st.first().IsZero() {
			wait = max(wait, firstStreamGrace-time.Since(up))
		}
		idle.Reset(max(wait, 0))
	}
	ended := ""
	for ended == "" {
		select {
		case <-sess.Done():
			ended = "router-closed"
		case <-deadline.C:
			ended = "deadline"
		case <-st.idle:
			rearm()
		case <-r.bg.Done():
			rearm()
		case <-idle.C:
			if d, ok := quiet(); ok && d >= linger {
				ended = "idle"
			} else {
				rearm()
			}
		}
	}
	endAt := time.Now()
	st.startDrain(ended == "idle")
	drainCtx, cancel := context.WithDeadline(context.Background(), inv.Deadline.Add(-postSafety))
	defer cancel()
	sess.Drain(drainCtx)
	if drainCtx.Err() != nil {
		log.Warn("drain cut short at the deadline; streams still running were reset", "in_flight", st.inFlight())
	}
	if c := st.carriedRequest(); c != nil && c.giveUp() {
		// The router left, or closed the instance as surplus (the client
		// had gone): it never ran.
		log.Info("the carried request was never claimed: dropped unrun", "ended", ended)
	}
	// Background work the requests began may finish within the drain.
	r.bg.Wait(drainCtx)
	if n := r.bg.CancelAll(); n > 0 {
		log.Warn("background work cut short at the deadline", "pending", n)
	}
	r.bg.Close()
	ph.drain = time.Since(endAt)
	if f := st.first(); !f.IsZero() {
		ph.toFirst = f.Sub(up)
	}
	sum := st.summary()
	sum.Ended, sum.LingerUs, sum.BackgroundUs = ended, linger.Microseconds(), alone.total().Microseconds()
	return sum, ph, nil
}

// fits is what the hello tells the router this instance can take at once:
// 0 (unknown) when CPU admission is off or nothing has been learnt.
func (r *runner) fits(limit int) int {
	if !r.cfg.CPUAdmission {
		return 0
	}
	return r.adm.Fits(limit)
}

// aloneClock measures the time background work is pending while no
// request is in flight.
type aloneClock struct {
	mu         sync.Mutex
	busy, work bool
	since      time.Time     // when work went on alone
	sum        time.Duration // the periods that ended
}

func (c *aloneClock) requests(busy bool)   { c.set(func() { c.busy = busy }) }
func (c *aloneClock) background(work bool) { c.set(func() { c.work = work }) }

func (c *aloneClock) set(change func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.work && !c.busy
	change()
	switch now := c.work && !c.busy; {
	case now && !was:
		c.since = time.Now()
	case was && !now:
		c.sum += time.Since(c.since)
	}
}

func (c *aloneClock) total() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.work && !c.busy {
		return c.sum + time.Since(c.since)
	}
	return c.sum
}
