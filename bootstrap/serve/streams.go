package serve

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrun/ferry/bootstrap/cpuguard"
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
	cpuGuard float64
	meter    *cpuguard.Meter

	draining atomic.Bool
	inflight atomic.Int64
	requests atomic.Int64
	nacks    atomic.Int64

	mu         sync.Mutex
	lastChange time.Time     // guarded by mu; when inflight last went to or from 0
	busySince  time.Time     // guarded by mu; set while inflight > 0
	busy       time.Duration // guarded by mu; completed busy periods
}

func newStreams(next http.Handler, limit int, deadline time.Time, cpuGuard float64, meter *cpuguard.Meter) *streams {
	return &streams{next: next, limit: int64(limit), deadline: deadline, cpuGuard: cpuGuard, meter: meter, lastChange: time.Now()}
}

func (s *streams) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.nack(w, tunnel.NackDraining)
		return
	}
	n := s.inflight.Add(1)
	switch {
	case n > s.limit:
		// SETTINGS_MAX_CONCURRENT_STREAMS should prevent this; be safe.
		s.inflight.Add(-1)
		s.nack(w, tunnel.NackLimit)
		return
	case n > 1 && s.cpuGuard > 0 && s.meter.Busy() >= s.cpuGuard:
		// One stream always runs; more would only queue for the CPU.
		s.inflight.Add(-1)
		s.nack(w, tunnel.NackCPU)
		return
	}
	s.requests.Add(1)
	if n == 1 {
		s.mu.Lock()
		if s.busySince.IsZero() { // else the last stream's period has not closed yet: it continues
			now := time.Now()
			s.busySince, s.lastChange = now, now
		}
		s.mu.Unlock()
	}
	defer s.done()
	s.next.ServeHTTP(&loadWriter{ResponseWriter: w, s: s}, r)
}

func (s *streams) done() {
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
	}
	s.lastChange = now
}

func (s *streams) nack(w http.ResponseWriter, reason string) {
	s.nacks.Add(1)
	h := w.Header()
	h.Set(tunnel.HeaderNack, reason)
	h.Set(tunnel.HeaderLoad, s.load().String())
	w.WriteHeader(http.StatusServiceUnavailable)
}

func (s *streams) load() tunnel.Load {
	var cpu float64
	if s.meter != nil {
		cpu = s.meter.Busy()
	}
	return tunnel.Load{InFlight: int(s.inflight.Load()), CPU: cpu, LeftMs: time.Until(s.deadline).Milliseconds()}
}

func (s *streams) startDrain() { s.draining.Store(true) }

func (s *streams) inFlight() int64 { return s.inflight.Load() }

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
	return Summary{Requests: s.requests.Load(), Nacks: s.nacks.Load(), BusyMs: busy.Milliseconds()}
}

// loadWriter adds the Ferry-Load hint to the response headers.
type loadWriter struct {
	http.ResponseWriter
	s           *streams
	wroteHeader bool
}

func (w *loadWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.Header().Set(tunnel.HeaderLoad, w.s.load().String())
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

// Unwrap exposes the tunnel's writer to http.ResponseController.
func (w *loadWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
