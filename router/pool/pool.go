// Package pool keeps one function's live instances (tunnels to running
// invocations), hands each request a free slot on one of them, and starts
// new invocations only when the live and pending ones cannot cover the
// requests waiting.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
)

// Policy chooses among instances with a free slot.
type Policy string

const (
	// Pack picks the busiest instance with a free slot: fewer instances,
	// more compute saved. The default.
	Pack Policy = "pack"
	// Spread picks the least busy instance: latency first.
	Spread Policy = "spread"
)

// Errors from Acquire.
var (
	ErrQueueFull  = errors.New("too many requests waiting for this function")
	ErrNoCapacity = errors.New("no instance had a free slot in time")
	ErrClosed     = errors.New("pool closed")
)

// Config configures a Pool.
type Config struct {
	Function       string
	MaxConcurrency int           // streams asked of each instance, a ceiling; if zero, 64
	Policy         Policy        // if empty, Pack
	QueueLimit     int           // requests waiting at once; if zero, 1000
	MaxInstances   int           // live plus pending; if zero, 1000
	MinTimeLeft    time.Duration // an instance with less left is not picked; if zero, 500ms
	// MaxLinger is the longest an instance is asked to stay idle before
	// it ends; the pool asks for less when the gaps between requests say
	// lingering costs more than it saves. If zero, 2ms.
	MaxLinger time.Duration
	// Plain lets a request that no live instance can take travel as one
	// plain invocation when tunnel invocations are not being shared (see
	// plainModel), if the caller says the request can (Acquire's plain).
	Plain bool
	// LaunchTimeout bounds one invocation's start, retries included. If
	// zero, 30s.
	LaunchTimeout time.Duration
	// OnLaunchFailure, if not nil, is told of each launch that brought no
	// tunnel, with its class (for metrics). Called with the pool locked:
	// it must not call back into the pool.
	OnLaunchFailure func(class string)
	Launcher        Launcher
	Logger          *slog.Logger
	// Now is the clock; if nil, time.Now.
	Now func() time.Time
}

// Pool is one function's instances. Its methods are safe for concurrent use.
type Pool struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	instances []*instance // guarded by mu; joined, not yet gone
	// byLoad[n] holds the instances with n streams in flight, so a pick
	// looks at the policy's preferred load first instead of scanning every
	// instance (a scan cost ms per request at 10k instances).
	byLoad   [][]*instance        // guarded by mu
	launches map[string]time.Time // guarded by mu; ids prepared whose tunnel has not arrived, and when
	waiters  []*waiter            // guarded by mu; FIFO
	// carried holds the requests pending launches carry, by launch id:
	// out of waiters, each bound to its launch's instance.
	carried  map[string]*waiter // guarded by mu
	failures int                // guarded by mu; consecutive launches that brought no tunnel
	// rounds counts the failures among them that were news: launches
	// begun after the last failure was seen. The launches of a burst that
	// all fail together (inits timing out on a crowded host) are one
	// round: launches back off by rounds, not by failures.
	rounds      int       // guarded by mu
	lastFailure time.Time // guarded by mu
	// failing is the class of the last launch failure once FailingThreshold
	// launches in a row have failed; "" while launches work.
	failing string // guarded by mu
	// cover is how many requests one new instance is expected to take: the
	// ceiling until instances say they are full for CPU, then a moving
	// average of the streams they held when they did. Launches are sized
	// by it, so a CPU-heavy function gets an instance per waiting request
	// at once instead of one launch after another.
	cover   float64      // guarded by mu
	linger  *lingerModel // guarded by mu
	sharing plainModel   // guarded by mu; whether requests share, and so whether to go plain
	// plain counts plain invocations in flight: they hold a sandbox, so
	// they count against MaxInstances.
	plain  int       // guarded by mu
	closed bool      // guarded by mu
	warned bool      // guarded by mu; told that instances take fewer streams than asked
	warm   warmState // guarded by mu
	// lastLimit is the streams the last instance to join took.
	lastLimit int // guarded by mu
	// lingerUnsaid: the last instance to join did not say its linger (an
	// older bootstrap); new ones are asked for no more than startLinger.
	lingerUnsaid bool // guarded by mu
	// fits is how many of the function's usual requests at once the last
	// instance that had learnt them said fit (its hello's Fits), or, until
	// one has, how many one held when it first said it was full; 0 until
	// then. A fresh sandbox has learnt nothing and says 0.
	fits  int   // guarded by mu
	stats Stats // guarded by mu
}

// Conn is an instance's tunnel, as the pool and the proxy use it:
// *tunnel.Conn, or in tests one of their own.
type Conn interface {
	http.RoundTripper // a leased stream goes over it
	Claims() tunnel.Claims
	Hello() tunnel.Hello
	Handshake() (accepted time.Time, took time.Duration)
	Limit() int
	Deadline() time.Time
	Draining() bool
	CanTakeStream() bool
	Load() (tunnel.Load, bool)
	// WatchLoad calls changed whenever the instance's load changes, until
	// the tunnel is gone.
	WatchLoad(changed func())
	Done() <-chan struct{}
	Shutdown(ctx context.Context) error
	Close() error
}

var _ Conn = (*tunnel.Conn)(nil)

type instance struct {
	conn     Conn
	limit    int
	inflight int   // guarded by Pool.mu
	slot     int   // guarded by Pool.mu; index in Pool.byLoad[inflight]
	gone     bool  // guarded by Pool.mu; removed: in no byLoad list
	served   int64 // guarded by Pool.mu
	warm     bool  // guarded by Pool.mu; one of the minimum (see warm.go)
	replaced bool  // guarded by Pool.mu; warm, and due for replacement
	// holds: its bootstrap was asked to stay until its deadline (it was
	// launched warm); once it is no longer warm, the pool closes it when
	// it goes idle.
	holds  bool // guarded by Pool.mu
	joined time.Time
	// placed is when the pool last gave it a stream.
	placed time.Time // guarded by Pool.mu
	// probed is the moment room was due (see dueLocked) when a
	// request was last tried on it beyond what it had said: one try per
	// moment.
	probed time.Time // guarded by Pool.mu
	// awaited is the moment room is due that a request waits for (see
	// Pool.acquire): one request waits for each.
	awaited time.Time // guarded by Pool.mu
	// dropsCarried: its invocation carried a request the pool will never
	// claim (its client left); set before it is placed, never changed.
	dropsCarried bool
	// linger is how long it stays idle before it ends, as its hello
	// said; -1 if it did not say. Set before it is placed.
	linger time.Duration
	// answered is when the last response it gave ended here (a nack or
	// a stream that never reached it does not restart its idle clock);
	// zero until one has.
	answered time.Time // guarded by Pool.mu
}

// endsSoon reports whether in, idle, is near enough the end of its linger
// that a stream sent now might meet its GOAWAY (and be refused). A stream
// that can be sent again loses only a try there; a last try would be
// lost. Its idle clock is taken to start when its last response ended
// here, after that response travelled (later still for a large one a slow
// client reads: the rule then narrows the race, not closes it); the
// stream has to travel too.
//
// The margin is a tenth of the linger: the linger model asks a quarter
// more than the gap it expects, so a client that sends its next request
// that long after the last answer still finds the instance (a larger
// margin turned such steady clients' last tries away for good).
func (in *instance) endsSoon(now time.Time) bool {
	if in.linger < 0 || in.answered.IsZero() {
		// It did not say; or it has answered nothing yet, and a new
		// instance waits far longer than its linger for its first stream.
		return false
	}
	return now.Sub(in.answered) >= in.linger-max(in.linger/10, lingerMargin)
}

// lingerMargin is the least time an idle instance must have left of its
// linger to be sent a last try: more than a response and a stream take to
// cross a tunnel, with room for a busy host's scheduling delays (0.5 ms
// lost a 90 KB POST under -race in CI). An instance that lingers 2 ms or
// less, the default ceiling, never takes a last try once idle.
const lingerMargin = 2 * time.Millisecond

type waiter struct {
	exclude *instance
	socket  bool           // a long-lived connection: needs a slot only
	lastTry bool           // to be sent as a last try: no instance only due
	ch      chan *instance // buffered 1; receives the assigned instance
	err     error          // set before ch is closed without an instance
	// event, if not nil, encodes the request as an HTTP event, for a
	// launch to carry (Launch.First).
	event func() ([]byte, error)
	// launch is the id of the launch carrying the request, or "".
	launch string
	// claim: the instance ch gives took the request (it came in its
	// invocation's event): the lease claims it.
	claim bool
}

// Stats are counters since the pool was made.
type Stats struct {
	Launches       int64 `json:"launches"`
	LaunchFailures int64 `json:"launch_failures"`
	Joined         int64 `json:"joined"`
	// Surplus counts instances closed as they joined: no request was
	// waiting for them any more.
	Surplus int64 `json:"surplus"`
	// Plain counts requests sent as plain invocations.
	Plain int64 `json:"plain"`
	// Carried counts launches that carried the request they were for (a
	// request whose launch Lambda refused is carried again, and counted
	// again).
	Carried int64 `json:"carried"`
}

// New returns an empty pool.
func New(cfg Config) (*Pool, error) {
	if cfg.Function == "" || cfg.Launcher == nil {
		return nil, errors.New("pool: Function and Launcher are required")
	}
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = 64
	}
	if cfg.Policy == "" {
		cfg.Policy = Pack
	}
	if cfg.Policy != Pack && cfg.Policy != Spread {
		return nil, fmt.Errorf("pool: unknown policy %q", cfg.Policy)
	}
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = 1000
	}
	if cfg.MaxInstances <= 0 {
		cfg.MaxInstances = 1000
	}
	if cfg.MinTimeLeft <= 0 {
		cfg.MinTimeLeft = 500 * time.Millisecond
	}
	if cfg.MaxLinger <= 0 {
		cfg.MaxLinger = 2 * time.Millisecond
	}
	if cfg.LaunchTimeout <= 0 {
		cfg.LaunchTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Pool{cfg: cfg, log: cfg.Logger.With("function", cfg.Function), launches: map[string]time.Time{}, carried: map[string]*waiter{},
		cover: float64(cfg.MaxConcurrency), linger: newLingerModel(cfg.MaxLinger), warm: warmState{pending: map[string]bool{}, asked: map[string]bool{}}}, nil
}

// Acquire returns a slot on a live instance, waiting for one while ctx
// allows and starting invocations if the live and pending ones cannot cover
// the waiting requests. avoid, if not nil, is the lease of this request's
// last attempt, whose instance refused it: the request goes back to that
// instance only once room is due on it (see acquire). plain says the
// request could travel as a plain invocation (see Config.Plain): then,
// when no live instance can take it and the function's tunnel invocations
// are not being shared, the lease returned is Plain.
func (p *Pool) Acquire(ctx context.Context, avoid *Lease, plain bool) (*Lease, error) {
	return p.acquire(ctx, avoid, plain, false, false, nil)
}

// AcquireCarriable is Acquire for a request that can travel in an invoke
// payload, as event encodes it (a Function URL event): an invocation
// launched for it carries it (Launch.First), bound to it, and then its
// lease is a Claim. plain is as for Acquire. lastTry says the request
// will be sent as a last try (tunnel.HeaderLastTry: the instance takes it
// whatever its CPU): it goes only to an instance that said it had room
// or is idle, never to one whose room is only due, nor to an idle one
// about to end.
func (p *Pool) AcquireCarriable(ctx context.Context, avoid *Lease, plain, lastTry bool, event func() ([]byte, error)) (*Lease, error) {
	return p.acquire(ctx, avoid, plain, false, lastTry, event)
}

// AcquireSocket is Acquire for a long-lived connection (a WebSocket): it
// holds a slot for as long as it lives, and asks nothing of the CPU the
// instance has room for, only a free slot.
func (p *Pool) AcquireSocket(ctx context.Context, avoid *Lease) (*Lease, error) {
	return p.acquire(ctx, avoid, false, true, false, nil)
}

func (p *Pool) acquire(ctx context.Context, avoid *Lease, plain, socket, lastTry bool, event func() ([]byte, error)) (*Lease, error) {
	var exclude *instance
	if avoid != nil && avoid.inst != nil {
		exclude = avoid.inst
	}
	if err := ctx.Err(); err != nil {
		// A request whose client already left launches nothing.
		return nil, fmt.Errorf("%w: %w", ErrNoCapacity, context.Cause(ctx))
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	// A request may wait for room due on a live instance, or try one
	// whose room is due: a new one, and a retry once (a CPU nack's hint
	// says when the instance that refused it will have room, often sooner
	// than a launch). A last try cannot risk a refusal, nor a socket wait
	// for CPU it does not need.
	hold := !socket && !lastTry && (avoid == nil || !avoid.held)
	inst, probe, soon, at := p.pickLocked(exclude, socket, lastTry, hold)
	waited := false
	if inst == nil && soon != nil && p.failing == "" && at.Sub(p.cfg.Now()) <= p.holdLocked() {
		// Room is due on a live instance sooner than a launch would
		// bring one: wait for it, then try again (it, or any other).
		if err := p.awaitDueLocked(ctx, soon, at); err != nil {
			return nil, err
		}
		waited = true
		inst, probe, _, _ = p.pickLocked(exclude, socket, lastTry, hold)
	}
	// A retry that waited for room due, or tried room only due, has had
	// its one chance: the next launches. (What it did as a new request
	// does not count: the nack that made it a retry brought a fresher
	// hint than the one it went on.)
	held := avoid != nil && (avoid.held || waited || probe)
	if avoid == nil && (inst == nil || inst.inflight == 0) {
		// A new request that busy instances cannot take: it meets an
		// idle instance, or one that lingered would have met it.
		p.linger.arrived(p.cfg.Now())
	}
	if inst != nil {
		p.addInFlightLocked(inst, 1)
		inst.served++
		p.mu.Unlock()
		return &Lease{p: p, inst: inst, held: held}, nil
	}
	if p.failing != "" {
		// Fail at once; one launch at a time, backed off, finds out
		// whether the function works again.
		if len(p.launches) == 0 {
			p.startLaunchesLocked(1)
		}
		err := &FailingError{Function: p.cfg.Function, Class: p.failing}
		p.mu.Unlock()
		return nil, err
	}
	if plain && p.plainLocked() {
		p.plain++
		p.stats.Plain++
		p.mu.Unlock()
		return &Lease{p: p}, nil
	}
	if len(p.waiters)+len(p.carried) >= p.cfg.QueueLimit {
		p.mu.Unlock()
		return nil, ErrQueueFull
	}
	w := &waiter{exclude: exclude, socket: socket, lastTry: lastTry, ch: make(chan *instance, 1), event: event}
	p.waiters = append(p.waiters, w)
	p.launchLocked()
	p.mu.Unlock()

	select {
	case inst, ok := <-w.ch:
		if !ok {
			return nil, w.err
		}
		return &Lease{p: p, inst: inst, claim: w.claim, held: held}, nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case inst, ok := <-w.ch: // assigned while we were giving up: hand it back
		if !ok {
			return nil, w.err
		}
		// A claim too: its request runs only once claimed, and is not.
		p.addInFlightLocked(inst, -1)
		inst.served--
		p.dispatchLocked()
	default:
		if w.launch != "" {
			// Its launch carries it, but the bootstrap runs it only when
			// the router claims it: the instance that comes is not held
			// for it, and it never runs.
			delete(p.carried, w.launch)
			w.launch = ""
			break
		}
		p.removeWaiterLocked(w)
	}
	if p.closed {
		return nil, ErrClosed
	}
	return nil, fmt.Errorf("%w: %w", ErrNoCapacity, context.Cause(ctx))
}

// awaitDueLocked waits, with p.mu released, until at, when room is due on
// in, for one request (see holdLocked). It returns with p.mu held, or
// with an error and p.mu released if ctx ends or the pool closes first.
func (p *Pool) awaitDueLocked(ctx context.Context, in *instance, at time.Time) error {
	in.awaited = at
	t := time.NewTimer(at.Sub(p.cfg.Now()))
	defer t.Stop()
	p.mu.Unlock()
	var err error
	select {
	case <-t.C:
	case <-ctx.Done():
		err = fmt.Errorf("%w: %w", ErrNoCapacity, context.Cause(ctx))
	}
	p.mu.Lock()
	if err != nil && in.awaited.Equal(at) {
		in.awaited = time.Time{} // another new request may wait for it
	}
	if p.closed {
		err = ErrClosed
	}
	if err != nil {
		p.mu.Unlock()
	}
	return err
}

// plainLocked reports whether a request no live instance can take goes
// plain: it would start a tunnel invocation (the pending ones are covering
// the requests already waiting), there is room for another sandbox, and
// the direct model predicts the invocation would take only this request.
func (p *Pool) plainLocked() bool {
	if !p.cfg.Plain {
		return false
	}
	if LaunchesNeeded(len(p.waiters)+len(p.carried)+1, len(p.launches), p.launchCoverLocked()) == 0 {
		return false
	}
	if len(p.instances)+len(p.launches)+p.plain >= p.cfg.MaxInstances {
		return false
	}
	return p.sharing.choose(p.cfg.Now())
}

// pickLocked returns the instance the policy prefers among those with a
// free slot and room for CPU, or nil: pack takes the busiest, spread the
// least busy. An idle instance always takes one. One that said it had
// room for r beside n streams is passed over while it holds n+r; one that
// cannot tell yet, while it holds what its hello said fit (or cover), or
// n or more after it said it was full at n.
//
// A last try never goes to an idle instance near the end of its linger
// (see endsSoon).
//
// With hold, an instance whose room is only due (see dueLocked) is taken
// once that moment has come and none has room; and exclude, which just
// refused the request, is not taken now but may be when room is due on it.
// probe says pick's room was only due. When it returns nil, soon is the
// instance whose room is due soonest, at a moment still to come that no
// request waits for yet (nil if none, or without hold), and at that
// moment.
func (p *Pool) pickLocked(exclude *instance, socket, lastTry, hold bool) (pick *instance, probe bool, soon *instance, at time.Time) {
	now := p.cfg.Now()
	n := len(p.byLoad)
	// due is the first instance, in the policy's order, that has no room
	// but is expected to by now (see dueLocked): taken only if none has room.
	// Without hold (a last try, a socket, a retry that held once) none goes
	// to one, so a last try lands only where room was said or on an idle
	// instance.
	var due *instance
	var dueAt time.Time
	for i := range n {
		load := i
		if p.cfg.Policy == Pack {
			load = n - 1 - i
		}
		for _, in := range p.byLoad[load] {
			if in.inflight >= in.limit || !in.conn.CanTakeStream() || (in == exclude && !hold) {
				continue
			}
			if in.conn.Deadline().Sub(now) < p.cfg.MinTimeLeft {
				continue
			}
			if lastTry && in.inflight == 0 && in.endsSoon(now) {
				continue
			}
			l, ok := in.conn.Load()
			full := false
			switch {
			case in == exclude:
				// It refused this request a moment ago: only room due
				// later, as its refusal's hint says.
				full = true
			case socket:
				// A socket needs a slot, not the CPU a request needs.
			case in.inflight == 0:
				// An idle instance takes one, whatever it said.
			case ok && l.Room >= 0:
				// It said how many more it would take beside the ones
				// it had: no more than that until it says again.
				full = in.inflight >= l.InFlight+l.Room
			case ok && l.Full && in.inflight >= l.InFlight:
				full = true
			default:
				// Until it can say how many it has room for (it has
				// answered nothing yet), what its hello said fit.
				full = in.inflight >= p.firstCapLocked(in, ok)
			}
			if !full {
				return in, false, nil, time.Time{}
			}
			if !hold {
				continue
			}
			from, ok := p.dueLocked(in, l, ok)
			switch {
			case !ok || in.probed.Equal(from):
			case !now.Before(from):
				if due == nil {
					due, dueAt = in, from
				}
			case in.awaited.Equal(from):
			case soon == nil || from.Before(at):
				soon, at = in, from
			}
		}
	}
	if due != nil {
		due.probed = dueAt // one try per moment
		return due, true, nil, time.Time{}
	}
	return nil, false, soon, at
}

// maxHold bounds how long a new request waits for room due on a live
// instance instead of starting an invocation: the CPU wait the issue's
// oracle allows a request (10 ms), and no longer than launches have been
// taking to bring an instance (holdLocked).
const maxHold = 10 * time.Millisecond

// holdLocked is how long a new request may wait for room due on a live
// instance: no longer than the launch it would otherwise wait for, so
// that, if the instance takes it, it is no slower and shares an
// invocation instead of paying for another (if the moment moves, or the
// instance nacks it, it launches that much later). 0 until a launch has
// been timed.
func (p *Pool) holdLocked() time.Duration {
	return min(p.warm.lead, maxHold)
}

// dueLocked reports when in, which its last hint (l, if ok; else its
// hello) counted as having no room for more, is expected to have room:
// once the CPU its requests had left at the hint is spent (RoomIn), and
// that of each request sent since, which the hint did not count, but for
// a little (Ahead after the last one). Once that moment has come (and no
// request has been tried on it for that moment), the instance is tried
// with one request, which it judges as any other: a nack brings a newer
// hint. Without it, an instance the router hears from only when it
// answers (no load stream) would take nothing beside a request until that
// request ends, however soon its CPU is behind it (an API handler waiting
// on its database). ok is false when it cannot say.
func (p *Pool) dueLocked(in *instance, l tunnel.Load, answered bool) (at time.Time, ok bool) {
	from, after, ahead := l.At, l.RoomIn, l.Ahead
	if !answered {
		h := in.conn.Hello()
		from, after, ahead = in.joined, time.Duration(h.RoomInUs)*time.Microsecond, time.Duration(h.AheadUs)*time.Microsecond
	}
	if after > 0 {
		at, ok = from.Add(after), true
	}
	if ahead > 0 && in.placed.After(from) {
		at, ok = latest(at, in.placed.Add(ahead)), true
	}
	return at, ok
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// addInFlightLocked changes in's streams in flight by d, keeping byLoad in
// step.
func (p *Pool) addInFlightLocked(in *instance, d int) {
	if !in.gone {
		p.unplaceLocked(in)
	}
	in.inflight += d
	if d > 0 {
		in.placed = p.cfg.Now()
	}
	if !in.gone {
		p.placeLocked(in)
	}
}

func (p *Pool) placeLocked(in *instance) {
	for len(p.byLoad) <= in.inflight {
		p.byLoad = append(p.byLoad, nil)
	}
	in.slot = len(p.byLoad[in.inflight])
	p.byLoad[in.inflight] = append(p.byLoad[in.inflight], in)
}

func (p *Pool) unplaceLocked(in *instance) {
	b := p.byLoad[in.inflight]
	last := b[len(b)-1]
	b[in.slot], last.slot = last, in.slot
	b[len(b)-1] = nil
	p.byLoad[in.inflight] = b[:len(b)-1]
}

// dispatchLocked hands free slots to waiters, oldest first. A waiter that
// avoids the only free instance is passed over, not allowed to block the
// queue behind it.
func (p *Pool) dispatchLocked() {
	kept := p.waiters[:0]
	requestsBlocked := false // a request found no room: the ones after it will not either
	for i, w := range p.waiters {
		if requestsBlocked && !w.socket && w.exclude == nil {
			kept = append(kept, w)
			continue
		}
		inst, _, _, _ := p.pickLocked(w.exclude, w.socket, w.lastTry, w.exclude == nil && !w.socket && !w.lastTry)
		if inst == nil {
			kept = append(kept, w)
			switch {
			case w.exclude != nil, w.lastTry: // passes over instances the ones after it may take
			case w.socket: // no free slot for anyone: keep the rest as is
				kept = append(kept, p.waiters[i+1:]...)
				clear(p.waiters[len(kept):])
				p.waiters = kept
				return
			default:
				requestsBlocked = true // sockets after it may still find a slot
			}
			continue
		}
		p.addInFlightLocked(inst, 1)
		inst.served++
		w.ch <- inst
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

func (p *Pool) removeWaiterLocked(w *waiter) {
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return
		}
	}
}

// Close stops the pool: waiters fail with ErrClosed, and every tunnel is
// shut down gracefully (in-flight streams finish) within ctx.
func (p *Pool) Close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	p.stopWarmLocked()
	insts := append([]*instance(nil), p.instances...)
	waiters := p.waiters
	p.waiters = nil
	for id, w := range p.carried {
		waiters = append(waiters, w) // unclaimed, it never runs
		delete(p.carried, id)
	}
	p.mu.Unlock()
	for _, w := range waiters {
		w.err = ErrClosed
		close(w.ch)
	}
	var wg sync.WaitGroup
	for _, in := range insts {
		wg.Go(func() { in.conn.Shutdown(ctx) })
	}
	wg.Wait()
}
