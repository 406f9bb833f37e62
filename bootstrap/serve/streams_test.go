package serve

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrun/ferry/bootstrap/admit"
	"github.com/ferryrun/ferry/internal/tunnel"
)

func TestStripProtocol(t *testing.T) {
	cases := map[string]struct{ in, want http.Header }{
		"app's own headers kept": {
			http.Header{"Content-Type": {"text/plain"}, "X-Ferry": {"ok"}},
			http.Header{"Content-Type": {"text/plain"}, "X-Ferry": {"ok"}},
		},
		"nack and load from the app dropped": {
			http.Header{"Ferry-Nack": {"cpu"}, "Ferry-Load": {"inflight=0"}, "Content-Type": {"text/plain"}},
			http.Header{"Content-Type": {"text/plain"}},
		},
		"any case": {
			http.Header{"ferry-nack": {"cpu"}, "FERRY-LAST-TRY": {"1"}},
			http.Header{},
		},
		"trailers set under the prefix dropped": {
			http.Header{http.TrailerPrefix + "Ferry-Nack": {"cpu"}, http.TrailerPrefix + "X-Sum": {"1"}},
			http.Header{http.TrailerPrefix + "X-Sum": {"1"}},
		},
		"declared trailers filtered": {
			http.Header{"Trailer": {"Ferry-Nack, X-Sum", "Ferry-Load"}},
			http.Header{"Trailer": {"X-Sum"}},
		},
		"only protocol trailers declared": {
			http.Header{"Trailer": {"Ferry-Nack"}},
			http.Header{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			stripProtocol(tc.in)
			if !reflect.DeepEqual(tc.in, tc.want) {
				t.Errorf("got %v, want %v", tc.in, tc.want)
			}
		})
	}
}

// TestNacksLeaveTheInstanceIdle: a stream refused for CPU is never
// counted in flight, not even while it is judged, so no ordering of its
// refusal and its neighbours' ends can leave the instance looking busy (a
// refusal that undid its own count after a neighbour ended once did, and
// the invocation billed to its deadline instead of ending on idle).
func TestNacksLeaveTheInstanceIdle(t *testing.T) {
	var cpu atomic.Int64
	var s *streams
	var judging atomic.Int64 // streams in flight while a request is judged
	adm := admit.New(admit.Config{CPUs: 1, Counter: func() time.Duration {
		if s != nil {
			judging.Store(s.inFlight())
		}
		return time.Duration(cpu.Load())
	}})
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cpu.Add(int64(50 * time.Millisecond)) // CPU-bound: nothing fits beside it
		if r.URL.Query().Has("hold") {
			<-release
		}
		if r.URL.Query().Has("pause") {
			// Long enough that streams overlap however the goroutines
			// are scheduled (a busy machine once ran them one by one).
			time.Sleep(time.Millisecond)
		}
	})
	s = newStreams(app, 64, time.Now().Add(time.Minute), adm, true)
	serve := func(target string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		return w
	}
	for range 3 { // learn that /burn is CPU-bound
		serve("/burn")
	}
	held := make(chan struct{})
	go func() { serve("/burn?hold"); close(held) }()
	for s.inFlight() != 1 {
		runtime.Gosched()
	}
	w := serve("/burn")
	if w.Code != http.StatusServiceUnavailable || w.Header().Get(tunnel.HeaderNack) != tunnel.NackCPU {
		t.Fatalf("second CPU-bound stream: %d %v, want a CPU nack", w.Code, w.Header())
	}
	if n := judging.Load(); n != 1 {
		t.Errorf("%d streams counted in flight while the second was judged, want 1: a refused stream was counted", n)
	}
	close(release)
	<-held
	if n := s.inFlight(); n != 0 {
		t.Errorf("%d streams in flight after all ended", n)
	}
	if s.idleFor() <= 0 {
		t.Error("instance busy after every stream ended: it would never end on idle")
	}

	// And under concurrency, however refusals and ends interleave.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				serve("/burn?pause")
			}
		})
	}
	wg.Wait()
	if sum := s.summary(); sum.Nacks < 2 {
		t.Fatalf("only %d streams refused under concurrency: the test shows nothing", sum.Nacks)
	}
	if n := s.inFlight(); n != 0 || s.idleFor() <= 0 {
		t.Errorf("after concurrent streams: %d in flight, idle for %v; want 0 and idle", n, s.idleFor())
	}
}

// TestLastTryMeetingAnIdleDrainRuns: a stream that meets the drain is
// refused, for the router to send elsewhere, except a last try (it has
// nowhere else to go) meeting a drain for want of requests: that one runs.
func TestLastTryMeetingAnIdleDrainRuns(t *testing.T) {
	for _, tc := range []struct {
		name          string
		idle, lastTry bool
		want          int
	}{
		{"idle drain, last try", true, true, http.StatusOK},
		{"idle drain, not a last try", true, false, http.StatusServiceUnavailable},
		{"deadline drain, last try", false, true, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ran") })
			s := newStreams(app, 64, time.Now().Add(time.Minute), nil, false)
			s.startDrain(tc.idle)
			req := httptest.NewRequest("POST", "/upload", strings.NewReader("a body the router could not send again"))
			if tc.lastTry {
				req.Header.Set(tunnel.HeaderLastTry, "1")
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != tc.want {
				t.Errorf("answered %d %q (nack %q), want %d", w.Code, w.Body, w.Header().Get(tunnel.HeaderNack), tc.want)
			}
			if tc.want != http.StatusOK && w.Header().Get(tunnel.HeaderNack) != tunnel.NackDraining {
				t.Errorf("refused without a draining nack: %v", w.Header())
			}
		})
	}
}
