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
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

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

// Launcher starts invocations that dial back.
type Launcher interface {
	// Prepare readies one invocation of function asking for maxConcurrency
	// streams and to end once idle for linger. It returns the id its
	// tunnel will present (Claims.ID) and a run function that invokes and
	// blocks until the invocation ends.
	Prepare(function string, maxConcurrency int, linger time.Duration) (id string, run func(ctx context.Context) error, err error)
}

// Errors from Acquire.
var (
	ErrQueueFull  = errors.New("too many requests waiting for this function")
	ErrNoCapacity = errors.New("no instance had a free slot in time")
	ErrClosed     = errors.New("pool closed")
)

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
	failures int                  // guarded by mu; consecutive launches that brought no tunnel
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
	plain  int   // guarded by mu
	closed bool  // guarded by mu
	warned bool  // guarded by mu; told that instances take fewer streams than asked
	stats  Stats // guarded by mu
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
}

type waiter struct {
	exclude *instance
	ch      chan *instance // buffered 1; receives the assigned instance
	err     error          // set before ch is closed without an instance
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
	return &Pool{cfg: cfg, log: cfg.Logger.With("function", cfg.Function), launches: map[string]time.Time{},
		cover: float64(cfg.MaxConcurrency), linger: newLingerModel(cfg.MaxLinger)}, nil
}

// Lease is one stream slot on one instance, or leave for one plain
// invocation. Release it exactly once, when the stream (or the invocation)
// has ended.
type Lease struct {
	p        *Pool
	inst     *instance // nil for a plain invocation
	answered bool
	unsafe   bool
	once     sync.Once
}

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
		l.p.addInFlightLocked(l.inst, -1)
		l.p.dispatchLocked()
		if l.inst.inflight == 0 {
			// Gone or not: an instance told to linger 0 may end before
			// its last response has been read here.
			l.p.linger.wentIdle(l.p.cfg.Now())
		}
		l.p.mu.Unlock()
	})
}

// learnCoverLocked moves cover toward what a hint shows: an instance full
// at n streams covers n; one not full at n covers more than n.
func (p *Pool) learnCoverLocked(l tunnel.Load) {
	if l.Full {
		p.cover += 0.3 * (float64(max(l.InFlight, 1)) - p.cover)
	} else if n := float64(l.InFlight + 1); n > p.cover {
		p.cover = min(n, float64(p.cfg.MaxConcurrency))
	}
}

// firstCapLocked is how many streams in may hold before its first answer:
// what its hello says fit at once, or, from a sandbox that has learnt
// nothing and would admit on its prior, what instances have been taking.
// (One more than the hello says was tried: api at 512 MB shared more, but
// CPU-bound requests bounced between fresh instances until their last try
// forced them onto busy ones, p50 7.6x plain Lambda's.)
func (p *Pool) firstCapLocked(in *instance) int {
	if f := in.conn.Hello().Fits; f > 0 {
		return min(f, p.cfg.MaxConcurrency)
	}
	return p.coverLocked()
}

// coverLocked is cover as a whole number of requests, 1..MaxConcurrency.
func (p *Pool) coverLocked() int {
	return min(max(int(math.Round(p.cover)), 1), p.cfg.MaxConcurrency)
}

// Acquire returns a slot on a live instance, waiting for one while ctx
// allows and starting invocations if the live and pending ones cannot cover
// the waiting requests. avoid, if not nil, is an earlier lease whose
// instance this request should not go to again (it nacked). plain says the
// request could travel as a plain invocation (see Config.Plain): then,
// when no live instance can take it and the function's tunnel invocations
// are not being shared, the lease returned is Plain.
func (p *Pool) Acquire(ctx context.Context, avoid *Lease, plain bool) (*Lease, error) {
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
	inst := p.pickLocked(exclude)
	if avoid == nil && (inst == nil || inst.inflight == 0) {
		// A new request that busy instances cannot take: it meets an
		// idle instance, or one that lingered would have met it.
		p.linger.arrived(p.cfg.Now())
	}
	if inst != nil {
		p.addInFlightLocked(inst, 1)
		inst.served++
		p.mu.Unlock()
		return &Lease{p: p, inst: inst}, nil
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
	if len(p.waiters) >= p.cfg.QueueLimit {
		p.mu.Unlock()
		return nil, ErrQueueFull
	}
	w := &waiter{exclude: exclude, ch: make(chan *instance, 1)}
	p.waiters = append(p.waiters, w)
	p.launchLocked()
	p.mu.Unlock()

	select {
	case inst, ok := <-w.ch:
		if !ok {
			return nil, w.err
		}
		return &Lease{p: p, inst: inst}, nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case inst, ok := <-w.ch: // assigned while we were giving up: hand it back
		if ok {
			p.addInFlightLocked(inst, -1)
			inst.served--
			p.dispatchLocked()
		} else {
			return nil, w.err
		}
	default:
		p.removeWaiterLocked(w)
	}
	if p.closed {
		return nil, ErrClosed
	}
	return nil, fmt.Errorf("%w: %w", ErrNoCapacity, context.Cause(ctx))
}

// plainLocked reports whether a request no live instance can take goes
// plain: it would start a tunnel invocation (the pending ones are covering
// the requests already waiting), there is room for another sandbox, and
// the direct model predicts the invocation would take only this request.
func (p *Pool) plainLocked() bool {
	if !p.cfg.Plain {
		return false
	}
	if LaunchesNeeded(len(p.waiters)+1, len(p.launches), p.coverLocked()) == 0 {
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
func (p *Pool) pickLocked(exclude *instance) *instance {
	now := p.cfg.Now()
	n := len(p.byLoad)
	for i := range n {
		load := i
		if p.cfg.Policy == Pack {
			load = n - 1 - i
		}
		for _, in := range p.byLoad[load] {
			if in == exclude || in.inflight >= in.limit || !in.conn.CanTakeStream() {
				continue
			}
			if in.conn.Deadline().Sub(now) < p.cfg.MinTimeLeft {
				continue
			}
			l, ok := in.conn.Load()
			switch {
			case in.inflight == 0:
				// An idle instance takes one, whatever it said.
			case ok && l.Room >= 0:
				// It said how many more it would take beside the ones
				// it had: no more than that until it says again.
				if in.inflight >= l.InFlight+l.Room {
					continue
				}
			case ok && l.Full && in.inflight >= l.InFlight:
				continue
			case in.inflight >= p.firstCapLocked(in):
				// Until it can say how many it has room for (it has
				// answered nothing yet), what its hello said fit.
				continue
			}
			return in
		}
	}
	return nil
}

// addInFlightLocked changes in's streams in flight by d, keeping byLoad in
// step.
func (p *Pool) addInFlightLocked(in *instance, d int) {
	if !in.gone {
		p.unplaceLocked(in)
	}
	in.inflight += d
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
	for i, w := range p.waiters {
		inst := p.pickLocked(w.exclude)
		if inst == nil {
			kept = append(kept, w)
			if w.exclude == nil { // no slot for anyone: keep the rest as is
				kept = append(kept, p.waiters[i+1:]...)
				break
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
	need := LaunchesNeeded(len(p.waiters), pending, p.coverLocked())
	if room := p.cfg.MaxInstances - len(p.instances) - pending - p.plain; need > room {
		need = max(room, 0)
	}
	p.startLaunchesLocked(need)
}

// startLaunchesLocked starts n invocations.
func (p *Pool) startLaunchesLocked(n int) {
	linger := time.Duration(0)
	if n > 0 {
		linger = p.linger.choose()
	}
	for range n {
		id, run, err := p.cfg.Launcher.Prepare(p.cfg.Function, p.cfg.MaxConcurrency, linger)
		if err != nil {
			p.log.Error("preparing invocation", "err", err)
			return
		}
		p.launches[id] = time.Now()
		p.stats.Launches++
		go p.run(id, run, p.failureDelayLocked())
	}
}

// failureDelayLocked backs off launches after consecutive failures, so a
// broken function is not invoked in a tight loop while requests wait.
func (p *Pool) failureDelayLocked() time.Duration {
	if p.failures == 0 {
		return 0
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.RandomizationFactor = 100*time.Millisecond, 30*time.Second, 0.2
	b.Reset()
	var d time.Duration
	for range min(p.failures, 20) {
		d = b.NextBackOff()
	}
	return d
}

func (p *Pool) run(id string, run func(context.Context) error, delay time.Duration) {
	if delay > 0 {
		time.Sleep(delay)
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
	if _, pending := p.launches[id]; !pending {
		if err != nil {
			p.log.Warn("invocation ended with an error", "err", err)
		}
		return
	}
	delete(p.launches, id)
	p.failures++
	p.stats.LaunchFailures++
	class := failureClass(err)
	if p.cfg.OnLaunchFailure != nil {
		p.cfg.OnLaunchFailure(class)
	}
	if p.closed {
		return
	}
	if p.failures < FailingThreshold {
		p.log.Error("invocation ended without a tunnel", "class", class, "err", err, "waiting", len(p.waiters))
		p.launchLocked()
		return
	}
	if len(p.launches) > 0 && p.failing == "" {
		// Launches still under way may yet bring instances (one failed
		// sandbox in a burst is not a broken function): wait for them,
		// starting no more.
		p.log.Error("invocation ended without a tunnel", "class", class, "err", err, "waiting", len(p.waiters), "pending", len(p.launches))
		return
	}
	if p.failing == "" {
		p.log.Error("function failing: requests fail at once until a launch succeeds; launches back off",
			"class", class, "err", err, "failures", p.failures, "waiting", len(p.waiters))
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

// Add puts an instance in the pool. Call it only once the tunnel is fully
// established (tunnel.ServerConfig.OnConn guarantees that): an instance in
// the pool must be able to take a stream at once.
func (p *Pool) Add(conn Conn) {
	inst := &instance{conn: conn, limit: conn.Limit()}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		conn.Close()
		return
	}
	launched, pending := p.launches[conn.Claims().ID]
	delete(p.launches, conn.Claims().ID)
	if p.failing != "" {
		p.log.Info("function recovered: an instance joined", "after_failures", p.failures)
	}
	p.failures, p.failing = 0, ""
	p.stats.Joined++
	if inst.limit < p.cfg.MaxConcurrency && !p.warned {
		// Each instance then covers fewer requests than launches assumed:
		// the pool launches more. Usually the function's own limit.
		p.warned = true
		p.log.Info("instances take fewer streams than the router asks: raise the function's FERRY_MAX_CONCURRENCY to match",
			"asked", p.cfg.MaxConcurrency, "took", inst.limit)
	}
	p.instances = append(p.instances, inst)
	p.placeLocked(inst)
	p.dispatchLocked()
	surplus := inst.inflight == 0 && len(p.waiters) == 0
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
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn.Shutdown(ctx)
		}()
		return
	}
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		// The cold path, for make bench: launch (invoke, sandbox start,
		// bootstrap init, TCP connect) then the tunnel handshake.
		accepted, handshake := conn.Handshake()
		attrs := []any{"instance", conn.Hello().RequestID, "limit", inst.limit, "handshake_us", handshake.Microseconds()}
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
	if len(p.waiters) > 0 && !p.closed {
		p.launchLocked()
	}
}

// State is a snapshot of the pool for the admin endpoint.
type State struct {
	Function  string          `json:"function"`
	Instances []InstanceState `json:"instances"`
	Pending   int             `json:"pending_invocations"`
	Waiting   int             `json:"waiting_requests"`
	// Cover is how many requests a new instance is expected to take.
	Cover int `json:"cover"`
	// LingerUs is the idle linger a new instance is asked for, chosen
	// from LingerGaps recent gaps between requests and the overhead of an
	// invocation beyond its busy time.
	LingerUs   int64 `json:"linger_us"`
	OverheadUs int64 `json:"invocation_overhead_us"`
	LingerGaps int   `json:"linger_gaps"`
	// Share is how many requests recent tunnel invocations took on
	// average (0 until a few have ended); below 1.25, requests no live
	// instance can take go as plain invocations, PlainInFlight of them now.
	Share         float64 `json:"share"`
	PlainMode     bool    `json:"plain_mode"`
	PlainInFlight int     `json:"plain_in_flight"`
	// Failing names the failure class while launches keep failing
	// (requests fail at once); ConsecutiveFailures counts them.
	Failing             string `json:"failing,omitempty"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
	Stats               Stats  `json:"stats"`
}

// InstanceState describes one live instance.
type InstanceState struct {
	RequestID string  `json:"request_id"`
	Limit     int     `json:"limit"`
	InFlight  int     `json:"in_flight"`
	Served    int64   `json:"served"`
	LeftMs    int64   `json:"left_ms"`
	Draining  bool    `json:"draining"`
	CPU       float64 `json:"cpu"`  // the CPU share its streams are expected to use
	Full      bool    `json:"full"` // its last hint: no room for a usual request
	// Room is how many more usual requests its last hint said it would
	// take beside the ones it had; -1 until it can tell.
	Room int `json:"room"`
}

// InFlight returns the live instances and their streams in flight, from
// the load lists: no walk over the instances.
func (p *Pool) InFlight() (instances, streams int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for load, ins := range p.byLoad {
		instances += len(ins)
		streams += load * len(ins)
	}
	return instances, streams
}

// State returns a snapshot.
func (p *Pool) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := State{Function: p.cfg.Function, Pending: len(p.launches), Waiting: len(p.waiters), Cover: p.coverLocked(), Stats: p.stats}
	linger, overhead, gaps := p.linger.state()
	s.LingerUs, s.OverheadUs, s.LingerGaps = linger.Microseconds(), overhead.Microseconds(), gaps
	s.Failing, s.ConsecutiveFailures = p.failing, p.failures
	now := p.cfg.Now()
	s.Share, s.PlainInFlight = math.Round(p.sharing.share()*100)/100, p.plain
	s.PlainMode = p.cfg.Plain && p.sharing.predicts(now)
	for _, in := range p.instances {
		l, ok := in.conn.Load()
		if !ok {
			l.Room = -1
		}
		s.Instances = append(s.Instances, InstanceState{
			RequestID: in.conn.Hello().RequestID, Limit: in.limit, InFlight: in.inflight, Served: in.served,
			LeftMs: in.conn.Deadline().Sub(now).Milliseconds(), Draining: in.conn.Draining(), CPU: l.CPU, Full: l.Full, Room: l.Room,
		})
	}
	sort.Slice(s.Instances, func(i, j int) bool { return s.Instances[i].RequestID < s.Instances[j].RequestID })
	return s
}

// Close stops the pool: waiters fail with ErrClosed, and every tunnel is
// shut down gracefully (in-flight streams finish) within ctx.
func (p *Pool) Close(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	insts := append([]*instance(nil), p.instances...)
	waiters := p.waiters
	p.waiters = nil
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
