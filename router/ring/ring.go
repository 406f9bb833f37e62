// Package ring is the router replicas' shared view of who serves which
// function. Members come from a Source (a static list, or AWS Cloud Map)
// and stay in the ring while they answer health probes. Each function is
// owned by the first k live members in rendezvous (highest-random-weight)
// order, k growing with the function's load, so every replica sends a
// function's requests to the same few replicas and their live instances,
// and a member joining or leaving moves only its own share of functions.
package ring

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrun/ferry/internal/loglimit"
)

// Source lists the replicas' peer addresses (host:port). The list may
// include this replica's own address.
type Source interface {
	Members(ctx context.Context) ([]string, error)
}

// Static is a fixed list of members: replicas not running at an address
// fail their probes and stay out of the ring until they answer.
type Static []string

// Members returns the list.
func (s Static) Members(context.Context) ([]string, error) { return s, nil }

// Health is what a probe of a member found.
type Health int

const (
	Up      Health = iota // it serves forwarded requests
	Leaving               // it answers, but is shutting down: it owns nothing
	Down                  // it did not answer
	// UpFailing: it serves, but says its calls to the Lambda API keep
	// failing, which is the region's Lambda failing, not the member.
	UpFailing
)

// Config configures a Ring.
type Config struct {
	// Self is this replica's address as its peers reach it.
	Self   string
	Source Source
	// Probe asks a member how it is; ctx bounds it.
	Probe func(ctx context.Context, addr string) Health
	// Every bounds each listing and each probe (the caller calls Refresh
	// that often). If zero, 1s.
	Every time.Duration
	// FailAfter is how many probes in a row a member may miss before it
	// leaves the ring. If zero, 3. A member that says it is leaving, or
	// whose connection is refused under a request (Down), leaves at once.
	FailAfter int
	// OwnerConcurrency is how many requests of one function one owner is
	// given at once, as estimated from this replica's share, before the
	// function gets another owner. If zero, 256.
	OwnerConcurrency int
	Logger           *slog.Logger
	// OnChange, if not nil, is called with the live members whenever they
	// change, from the goroutine that saw the change, with no lock held.
	OnChange func(live []string)
}

// Ring is this replica's view of the ring. Its methods are safe for
// concurrent use.
type Ring struct {
	cfg Config // static after New

	live    atomic.Pointer[[]string] // sorted; Self included unless leaving
	leaving atomic.Bool

	mu      sync.Mutex
	members map[string]*member // other replicas known from the source; guarded by mu
	load    map[string]*fnLoad // by function; guarded by mu
	sent    map[string]int     // requests in flight to each peer; guarded by mu
	warns   loglimit.Limiter
}

type member struct {
	misses  int // probes missed in a row
	up      bool
	leaving bool
	failing bool // its last answer said its Lambda calls keep failing
}

// fnLoad is a function's requests in flight through this replica's
// ingress, and the most there were in the current and last window.
type fnLoad struct {
	now        int
	peak, last int
	since      time.Time
}

// loadWindow is how long a peak of load keeps a function's extra owners.
const loadWindow = 15 * time.Second

// New returns a ring with only this replica live; Refresh adds the others as
// they answer.
func New(cfg Config) (*Ring, error) {
	if _, _, err := net.SplitHostPort(cfg.Self); err != nil {
		return nil, fmt.Errorf("ring: this replica's address %q: want host:port", cfg.Self)
	}
	if cfg.Source == nil || cfg.Probe == nil {
		return nil, errors.New("ring: Source and Probe are required")
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.FailAfter <= 0 {
		cfg.FailAfter = 3
	}
	if cfg.OwnerConcurrency <= 0 {
		cfg.OwnerConcurrency = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Ring{cfg: cfg, members: map[string]*member{}, load: map[string]*fnLoad{}, sent: map[string]int{}}
	r.live.Store(&[]string{cfg.Self})
	return r, nil
}

// Self is this replica's address.
func (r *Ring) Self() string { return r.cfg.Self }

// Live is the members in the ring, sorted.
func (r *Ring) Live() []string { return *r.live.Load() }

// Refresh lists the members and probes each other one once, each within
// Every.
func (r *Ring) Refresh(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, r.cfg.Every)
	addrs, err := r.cfg.Source.Members(lctx)
	cancel()
	if err != nil {
		// Keep the members known: a discovery outage must not empty the
		// ring. Probes still take dead ones out.
		r.warns.Warn(r.cfg.Logger, "listing router replicas failed; keeping the members known", "err", err)
		addrs = nil
		r.mu.Lock()
		for a := range r.members {
			addrs = append(addrs, a)
		}
		r.mu.Unlock()
	}
	addrs = slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return a == r.cfg.Self })
	// Probes get a time of their own: a listing that took all of its
	// must not make every member miss a probe.
	ctx, cancel = context.WithTimeout(ctx, r.cfg.Every)
	defer cancel()
	health := make([]Health, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() { health[i] = r.cfg.Probe(ctx, a) })
	}
	wg.Wait()

	r.mu.Lock()
	known := make(map[string]*member, len(addrs))
	for i, a := range addrs {
		m := r.members[a]
		if m == nil {
			m = &member{}
		}
		switch health[i] {
		case Up, UpFailing:
			m.up, m.leaving, m.misses, m.failing = true, false, 0, health[i] == UpFailing
		case Leaving:
			m.up, m.leaving = false, true
		default:
			if m.misses++; m.misses >= r.cfg.FailAfter {
				m.up = false
			}
		}
		known[a] = m
	}
	r.members = known
	live := r.publishLocked()
	r.mu.Unlock()
	r.changed(live)
}

// Down takes addr out of the ring at once: a connection to it failed. A
// later probe that it answers brings it back.
func (r *Ring) Down(addr string) {
	r.mu.Lock()
	var live []string
	if m := r.members[addr]; m != nil && m.up {
		m.up, m.misses = false, r.cfg.FailAfter
		live = r.publishLocked()
	}
	r.mu.Unlock()
	r.changed(live)
}

// Leave takes this replica out of the ring: it owns nothing from now on
// (its probes say so, so peers stop forwarding to it) and routes every
// request it still takes to the other owners.
func (r *Ring) Leave() {
	if r.leaving.Swap(true) {
		return
	}
	r.mu.Lock()
	live := r.publishLocked()
	r.mu.Unlock()
	r.changed(live)
}

// Leaving reports whether Leave was called.
func (r *Ring) Leaving() bool { return r.leaving.Load() }

// publishLocked puts the members up now in the ring, and returns them if
// that changed it (nil if not).
func (r *Ring) publishLocked() []string {
	live := make([]string, 0, len(r.members)+1)
	if !r.leaving.Load() {
		live = append(live, r.cfg.Self)
	}
	for a, m := range r.members {
		if m.up {
			live = append(live, a)
		}
	}
	slices.Sort(live)
	if old := *r.live.Load(); slices.Equal(old, live) {
		return nil
	}
	r.live.Store(&live)
	r.cfg.Logger.Info("router ring changed", "members", live)
	return live
}

// changed tells OnChange of a change, outside the lock.
func (r *Ring) changed(live []string) {
	if live != nil && r.cfg.OnChange != nil {
		r.cfg.OnChange(live)
	}
}

// PeersFailing reports whether a member in the ring said, when last
// probed, that its calls to the Lambda API keep failing: owners make a
// function's calls, so the others learn of the region's trouble from
// them.
func (r *Ring) PeersFailing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.members {
		if m.up && m.failing {
			return true
		}
	}
	return false
}

// Owns reports whether this replica is fn's first owner: the one that
// keeps fn's minimum of live instances.
func (r *Ring) Owns(fn string) bool {
	live := r.Live()
	return !r.leaving.Load() && len(live) > 0 && Rank(fn, live)[0] == r.cfg.Self
}

// Begin counts a request for fn taken by this replica's ingress, until
// the returned func is called. The count sets how many owners fn has.
func (r *Ring) Begin(fn string) (end func()) {
	r.mu.Lock()
	l := r.load[fn]
	if l == nil {
		l = &fnLoad{since: time.Now()}
		r.load[fn] = l
	}
	l.now++
	r.rollLocked(l)
	l.peak = max(l.peak, l.now)
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		l.now--
		r.mu.Unlock()
	}
}

func (r *Ring) rollLocked(l *fnLoad) {
	if time.Since(l.since) >= loadWindow {
		l.last, l.peak, l.since = l.peak, l.now, time.Now()
	}
}

// owners is how many owners fn has among n live members: enough that
// each takes at most OwnerConcurrency of its requests at once, judged
// from this replica's share of them (one of n) over the last window.
func (r *Ring) ownersLocked(fn string, n int) int {
	l := r.load[fn]
	if l == nil {
		return 1
	}
	r.rollLocked(l)
	total := max(l.peak, l.last) * n
	return min(max(1, (total+r.cfg.OwnerConcurrency-1)/r.cfg.OwnerConcurrency), n)
}

// Plan is where a request for fn is tried, in order: peers' addresses,
// and "" for this replica. A plan that begins with "" serves here. Peers
// come first only when this replica is not among fn's owners; the owner
// given the fewest of this replica's requests goes first, the others in
// rendezvous order after it (at most two peers in all), then this one:
// forwarding never loops, and falls back to serving here.
func (r *Ring) Plan(fn string) []string {
	live := r.Live()
	order := Rank(fn, live)
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.ownersLocked(fn, len(order))
	if slices.Contains(order[:k], r.cfg.Self) || len(order) == 0 {
		return []string{""}
	}
	first := order[0]
	for _, a := range order[1:k] {
		if r.sent[a] < r.sent[first] {
			first = a
		}
	}
	plan := []string{first}
	for _, a := range order {
		if len(plan) == 2 {
			break
		}
		if a != first && a != r.cfg.Self {
			plan = append(plan, a)
		}
	}
	return append(plan, "")
}

// Sending counts a request in flight to peer until the returned func is
// called.
func (r *Ring) Sending(peer string) (done func()) {
	r.mu.Lock()
	r.sent[peer]++
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		if r.sent[peer]--; r.sent[peer] <= 0 {
			delete(r.sent, peer)
		}
		r.mu.Unlock()
	}
}

// Rank orders members for key by rendezvous hashing: by the weight of
// (member, key), highest first. Every replica computes the same order
// from the same members, and removing one member leaves the others' order
// as it was.
func Rank(key string, members []string) []string {
	type ranked struct {
		addr string
		w    uint64
	}
	rs := make([]ranked, len(members))
	for i, m := range members {
		rs[i] = ranked{m, weight(m, key)}
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.addr, b.addr)
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.addr
	}
	return out
}

// weight is FNV-1a of member, a zero byte and key, finished with
// splitmix64's mixer so that nearby inputs spread over the whole range.
func weight(member, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
