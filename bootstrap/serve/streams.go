package serve

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrun/ferry/bootstrap/admit"
	"github.com/ferryrun/ferry/internal/tunnel"
)

// streams admits the tunnel's streams to the app: it nacks what the instance
// should not take, counts what it does, and puts a load hint on every
// response.
type streams struct {
	// static after newStreams
	next     http.Handler
	limit    int64
	deadline time.Time
	adm      *admit.Admitter // learns from every stream; nil: no admitter at all
	admit    bool            // nack streams that would crowd the CPU
	// dialApp connects to the app for a protocol upgrade.
	dialApp func(context.Context) (net.Conn, error)
	// onBusy, if set, is told when a busy period begins (true) and ends;
	// called with mu held.
	onBusy func(busy bool)
	// idle is signalled when the instance becomes idle or busy, so that
	// the linger is timed from the moment it went idle.
	idle chan struct{}
	// changed is signalled when a stream starts or ends, for the load
	// stream; drained is closed when draining starts.
	changed   chan struct{}
	drained   chan struct{}
	drainOnce sync.Once

	draining atomic.Bool
	// idleDrain: the drain is for want of requests, not the deadline.
	idleDrain atomic.Bool
	inflight  atomic.Int64
	// held counts streams waiting to be judged (admit.Admitter.Wait): not
	// in flight, but an instance holding one is not idle.
	held     atomic.Int64
	requests atomic.Int64
	nacks    atomic.Int64

	mu         sync.Mutex
	lastChange time.Time     // guarded by mu; when inflight last went to or from 0
	busySince  time.Time     // guarded by mu; set while inflight > 0
	busy       time.Duration // guarded by mu; completed busy periods
	firstAt    time.Time     // guarded by mu; when the first stream began to run
	// carried is the request the dial-back event carried, if any.
	carried *carried // guarded by mu
	log     *slog.Logger
}

func newStreams(next http.Handler, limit int, deadline time.Time, adm *admit.Admitter, admitCPU bool) *streams {
	return &streams{next: next, limit: int64(limit), deadline: deadline, adm: adm, admit: admitCPU && adm != nil,
		idle: make(chan struct{}, 1), changed: make(chan struct{}, 1), drained: make(chan struct{}), lastChange: time.Now(),
		log: slog.Default()}
}

func (s *streams) poke() { signal(s.idle) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *streams) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(tunnel.HeaderLoadStream) != "" {
		// The router's own stream (clients' Ferry-* headers never reach
		// here): not a request, never the app's.
		s.watch(w, r)
		return
	}
	claim := r.Header.Get(tunnel.HeaderClaim) != ""
	lastTry := claim || r.Header.Get(tunnel.HeaderLastTry) != ""
	switch {
	case claim:
		// The router's claim on the request the invocation carried: that
		// request runs on this stream, in place of the stream's own,
		// whatever the CPU (it is the invocation's first).
		req, ok := s.takeCarried(r.Context())
		if !ok {
			// The stream is reset, which the router reports as a
			// request lost after it reached the app.
			s.log.Warn("a claim found no carried request to run")
			panic(http.ErrAbortHandler)
		}
		r = req
	case s.draining.Load() && !(lastTry && s.idleDrain.Load()):
		// A last try cannot go elsewhere (its body is already spent, or
		// it ran out of attempts): one that meets an instance ending for
		// want of requests runs, and the drain waits for it, where a nack
		// would fail it. One that meets the deadline's drain is refused:
		// it might not finish.
		s.nack(w, tunnel.NackDraining)
		return
	case r.Header.Get(tunnel.HeaderDropCarried) != "":
		s.dropCarried()
	case !s.awaitCarried(r.Context()):
		return
	}
	r.Header.Del(tunnel.HeaderLastTry) // the app never sees the protocol
	r.Header.Del(tunnel.HeaderDropCarried)
	// A refused stream never counts as in flight: only a stream that runs
	// moves inflight, and its deferred done closes the busy period. (A nack
	// that undid its own count once left an instance busy, billed to its
	// deadline, when the stream before it ended in between.)
	if !claim && s.inflight.Load() >= s.limit {
		// SETTINGS_MAX_CONCURRENT_STREAMS should prevent this; be safe.
		s.nack(w, tunnel.NackLimit)
		return
	}
	upgrade := r.Header.Get(tunnel.HeaderUpgrade) != ""
	var ticket *admit.Ticket
	if s.adm != nil && !upgrade { // a long-lived connection teaches admission nothing about requests
		kind := admit.KindOf(r)
		if s.admit && !lastTry {
			// A kind this sandbox has not learnt, beside one of its kind
			// that started a moment ago: judged once that one has shown
			// whether it computes (a cold burst all at once otherwise
			// shares one vCPU).
			if !s.hold(r.Context(), kind) {
				return
			}
			if s.draining.Load() {
				s.nack(w, tunnel.NackDraining)
				return
			}
		}
		if !s.admit || lastTry {
			// A last try (or a claim) has nowhere else to go.
			ticket = s.adm.Take(kind)
		} else if t, ok := s.adm.Admit(kind); ok {
			// Admit takes the first stream always: alone it costs what
			// one plain invocation costs.
			ticket = t
		} else {
			s.nack(w, tunnel.NackCPU)
			return
		}
	}
	s.begin()
	defer s.done()
	if ticket != nil {
		defer ticket.Done() // before done: the admitter has let go when the next stream asks
	}
	if upgrade {
		s.upgrade(w, r)
		return
	}
	s.next.ServeHTTP(&loadWriter{ResponseWriter: w, s: s, ticket: ticket}, r)
	// Trailers go out after this returns: none may speak the protocol.
	stripProtocol(w.Header())
}

// stripProtocol deletes the tunnel protocol's headers, and trailers
// declared or set under them, from what the app wrote. Only the bootstrap
// speaks to the router: an app answering 503 with Ferry-Nack after doing
// the work would otherwise have the router run it again elsewhere.
func stripProtocol(h http.Header) {
	for k, vs := range h {
		name := strings.TrimPrefix(k, http.TrailerPrefix)
		switch {
		case tunnel.IsProtocolHeader(name):
			delete(h, k)
		case k == "Trailer":
			kept := vs[:0]
			for _, v := range vs {
				var names []string
				for n := range strings.SplitSeq(v, ",") {
					if n = strings.TrimSpace(n); n != "" && !tunnel.IsProtocolHeader(n) {
						names = append(names, n)
					}
				}
				if len(names) > 0 {
					kept = append(kept, strings.Join(names, ", "))
				}
			}
			if len(kept) == 0 {
				delete(h, k)
			} else {
				h[k] = kept
			}
		}
	}
}

// hold waits until a request of kind can be judged (admit.Admitter.Wait),
// looking again each ms; false if the router gave up on it meanwhile.
func (s *streams) hold(ctx context.Context, kind admit.Kind) bool {
	d := s.adm.Wait(kind)
	if d <= 0 {
		return true
	}
	s.held.Add(1)
	defer func() {
		s.held.Add(-1)
		s.poke() // the instance may have gone idle meanwhile
	}()
	t := time.NewTimer(min(d, time.Millisecond))
	defer t.Stop()
	for ; d > 0; d = s.adm.Wait(kind) {
		t.Reset(min(d, time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// begin counts a request that runs in the app from now; done, when it
// has ended.
func (s *streams) begin() {
	n := s.inflight.Add(1)
	signal(s.changed)
	s.requests.Add(1)
	if n != 1 {
		return
	}
	s.mu.Lock()
	if s.busySince.IsZero() { // else the last stream's period has not closed yet: it continues
		now := time.Now()
		s.busySince, s.lastChange = now, now
		if s.onBusy != nil {
			s.onBusy(true)
		}
		if s.firstAt.IsZero() {
			s.firstAt = now
		}
	}
	s.mu.Unlock()
	s.poke()
}

func (s *streams) done() {
	signal(s.changed)
	if s.inflight.Add(-1) != 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight.Load() != 0 {
		return // a new stream started meanwhile: the busy period goes on
	}
	now := time.Now()
	if !s.busySince.IsZero() {
		s.busy += now.Sub(s.busySince)
		s.busySince = time.Time{}
		if s.onBusy != nil {
			s.onBusy(false)
		}
	}
	s.lastChange = now
	s.poke()
}

func (s *streams) nack(w http.ResponseWriter, reason string) {
	s.nacks.Add(1)
	h := w.Header()
	h.Set(tunnel.HeaderNack, reason)
	h.Set(tunnel.HeaderLoad, s.load(false, nil).String())
	w.WriteHeader(http.StatusServiceUnavailable)
}

// load is the hint on a nack, or on the response to a stream (response
// true, its ticket answering): the load that stream leaves behind.
func (s *streams) load(response bool, answering *admit.Ticket) tunnel.Load {
	n := int(s.inflight.Load())
	if response {
		n = max(n-1, 0)
	}
	l := tunnel.Load{InFlight: n, LeftMs: time.Until(s.deadline).Milliseconds(), Room: -1}
	if s.adm != nil {
		var fits bool
		var room int
		l.CPU, fits, room = s.adm.Hint(answering, int(s.limit)-n)
		if s.admit {
			l.Full, l.Room = !fits, room
			if l.Full || l.Room == 0 {
				l.RoomIn = s.adm.RoomIn(answering)
			}
			l.Ahead = s.adm.UsualAhead()
		}
	}
	return l
}

// loadTick is the least time between two lines of the load stream, and
// how often a busy instance looks again: its requests' CPU moves its
// room without any stream starting or ending.
const loadTick = 5 * time.Millisecond

// watch answers the router's load stream: the load now, then again each
// time it changes (looked at every loadTick while streams run, at once
// when one starts or ends while idle), until the tunnel drains or the
// router leaves. The router places requests on it between answers.
func (s *streams) watch(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(tunnel.HeaderLoadStream, "1")
	w.WriteHeader(http.StatusOK)
	ctl := http.NewResponseController(w)
	var last tunnel.Load
	sent := false
	tick := time.NewTimer(loadTick)
	defer tick.Stop()
	for {
		l := s.load(false, nil)
		if !sent || l.InFlight != last.InFlight || l.Full != last.Full || l.Room != last.Room ||
			math.Abs(l.CPU-last.CPU) >= 0.05 {
			if _, err := io.WriteString(w, l.String()+"\n"); err != nil || ctl.Flush() != nil {
				return
			}
			last, sent = l, true
		}
		busy := l.InFlight > 0
		if busy {
			tick.Reset(loadTick)
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.drained:
			return
		case <-s.changed:
			if !busy {
				continue
			}
			<-tick.C // no more than a line a tick
		case <-tick.C:
		}
	}
}

// startDrain refuses new streams from now on, but for last tries when
// idle says the invocation ends for want of requests, with time left.
func (s *streams) startDrain(idle bool) {
	s.idleDrain.Store(idle)
	s.draining.Store(true)
	s.drainOnce.Do(func() { close(s.drained) })
}

func (s *streams) inFlight() int64 { return s.inflight.Load() }

// holding reports whether a stream waits to be judged.
func (s *streams) holding() bool { return s.held.Load() > 0 }

// first is when the first stream began to run; zero if none has.
func (s *streams) first() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstAt
}

// idleFor returns how long no request has been in flight, or 0 if one is.
func (s *streams) idleFor() time.Duration {
	if s.inflight.Load() > 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.busySince.IsZero() {
		return 0
	}
	return time.Since(s.lastChange)
}

func (s *streams) summary() Summary {
	s.mu.Lock()
	busy := s.busy
	if !s.busySince.IsZero() {
		busy += time.Since(s.busySince)
	}
	s.mu.Unlock()
	return Summary{Requests: s.requests.Load(), Nacks: s.nacks.Load(), BusyMs: busy.Milliseconds(), BusyUs: busy.Microseconds()}
}

// loadWriter adds the Ferry-Load hint to the response headers.
type loadWriter struct {
	http.ResponseWriter
	s           *streams
	ticket      *admit.Ticket
	wroteHeader bool
}

func (w *loadWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		stripProtocol(w.Header())
		w.Header().Set(tunnel.HeaderLoad, w.s.load(true, w.ticket).String())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *loadWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush lets handlers that assert http.Flusher stream through the tunnel.
func (w *loadWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Nack refuses the stream as the bootstrap's own nacks do, for a layer
// below that found the request cannot run here although the app never saw
// it (the app did not accept the connection). After the header is written
// it is too late: the stream is answered as it stands.
func (w *loadWriter) Nack(reason string) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.s.requests.Add(-1) // it never reached the app
	w.s.nack(w.ResponseWriter, reason)
}

// Unwrap exposes the tunnel's writer to http.ResponseController.
func (w *loadWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
