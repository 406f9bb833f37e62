// Package metrics aggregates the router's per-function metrics and hands
// them, once per interval and never once per request, to sinks: CloudWatch
// Embedded Metric Format lines on stdout (EMF), or PutMetricData calls
// (CloudWatch) where no log pipeline extracts EMF.
package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferryrun/ferry/internal/quantile"
)

// Namespace is the CloudWatch namespace of every metric.
const Namespace = "Ferry"

// maxSamples is EMF's limit on values of one metric in one line.
const maxSamples = 100

// Recorder collects metrics. Its methods are safe for concurrent use.
type Recorder struct {
	// static after New
	sinks    []Sink
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu  sync.Mutex
	fns map[string]*window // guarded by mu; reset at each flush
	// ring is how many router replicas share the functions (0: no ring);
	// reported with each function's figures.
	ring atomic.Int64
}

type window struct {
	requests, errors5xx, nacks, invocations, coldStarts, throttles int64
	launchFailures, forwarded                                      int64
	requestMs, invocationMs, queueWaitMs, routerAddedMs            float64
	activeCPUMs, idleMs, backgroundMs                              float64
	latencies                                                      []float64 // reservoir sample, ms
	seen                                                           int64     // latencies offered to the reservoir
	inflightSum, inflightN                                         float64
}

// New returns a Recorder that hands each interval's aggregates (if
// interval is zero, 60s) to every sink. log reports sinks that fail.
func New(interval time.Duration, log *slog.Logger, sinks ...Sink) *Recorder {
	if interval <= 0 {
		interval = time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{sinks: sinks, interval: interval, log: log, now: time.Now, fns: map[string]*window{}}
}

func (r *Recorder) win(fn string) *window {
	w := r.fns[fn]
	if w == nil {
		w = &window{}
		r.fns[fn] = w
	}
	return w
}

// Request records one client request: total is what the client waited,
// app the time its stream was open on an instance (what one request per
// invocation would have billed), queue the wait for a slot.
func (r *Recorder) Request(fn string, status int, total, app, queue time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.win(fn)
	w.requests++
	if status >= 500 {
		w.errors5xx++
	}
	ms := float64(total) / float64(time.Millisecond)
	w.requestMs += math.Ceil(float64(app) / float64(time.Millisecond))
	w.queueWaitMs += float64(queue) / float64(time.Millisecond)
	if added := total - app - queue; added > 0 {
		w.routerAddedMs += float64(added) / float64(time.Millisecond)
	}
	w.seen++
	if len(w.latencies) < maxSamples {
		w.latencies = append(w.latencies, ms)
	} else if j := rand.Int64N(w.seen); j < maxSamples {
		w.latencies[j] = ms
	}
}

// Forwarded records a client request this replica passed to the replica
// that owns its function. The owner records it as a Request: each request
// is counted once, where it ran.
func (r *Recorder) Forwarded(fn string) {
	r.mu.Lock()
	r.win(fn).forwarded++
	r.mu.Unlock()
}

// RingSize records how many router replicas are in the ring now.
func (r *Recorder) RingSize(n int) { r.ring.Store(int64(n)) }

// Nack records a stream an instance refused.
func (r *Recorder) Nack(fn string) {
	r.mu.Lock()
	r.win(fn).nacks++
	r.mu.Unlock()
}

// Invocation is what an invocation that ended cost.
type Invocation struct {
	BilledMs int64
	CPU      time.Duration // what its sandbox used
	// Idle is its billed time with no request in it (a tunnel's lingers,
	// and all of a warm instance's waiting).
	Idle time.Duration
	// Background is the time the app's background work (waitUntil) kept
	// it going with no request in flight.
	Background time.Duration
	Cold       bool
}

// Invocation records an invocation that ended.
func (r *Recorder) Invocation(fn string, inv Invocation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.win(fn)
	w.invocations++
	w.invocationMs += float64(inv.BilledMs)
	w.activeCPUMs += float64(inv.CPU) / float64(time.Millisecond)
	w.idleMs += float64(inv.Idle) / float64(time.Millisecond)
	w.backgroundMs += float64(inv.Background) / float64(time.Millisecond)
	if inv.Cold {
		w.coldStarts++
	}
}

// Throttle records an invoke answered 429.
func (r *Recorder) Throttle(fn string) {
	r.mu.Lock()
	r.win(fn).throttles++
	r.mu.Unlock()
}

// LaunchFailure records an invocation that brought no instance (its init
// failed, say).
func (r *Recorder) LaunchFailure(fn string) {
	r.mu.Lock()
	r.win(fn).launchFailures++
	r.mu.Unlock()
}

// InFlight records a sample of the mean streams per live instance.
func (r *Recorder) InFlight(fn string, perInstance float64) {
	r.mu.Lock()
	w := r.win(fn)
	w.inflightSum += perInstance
	w.inflightN++
	r.mu.Unlock()
}

// Run flushes every interval until ctx ends, then flushes once more. It is
// the only caller of the sinks: no request waits on a sink.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last flush outlives ctx, within a bound.
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			r.Flush(final)
			cancel()
			return
		case <-t.C:
			// A sink call that hangs must not stop every later flush.
			flush, cancel := context.WithTimeout(ctx, min(r.interval, 30*time.Second))
			r.Flush(flush)
			cancel()
		}
	}
}

// Flush hands the aggregates of every function with activity since the
// last flush to the sinks (none, if nothing happened), and resets.
func (r *Recorder) Flush(ctx context.Context) {
	r.mu.Lock()
	fns := r.fns
	r.fns = map[string]*window{}
	r.mu.Unlock()
	// Sinks are called even when nothing happened: one holding what an
	// outage kept sends it now, not with the next request, which may
	// never come.
	names := make([]string, 0, len(fns))
	for n := range fns {
		names = append(names, n)
	}
	sort.Strings(names)
	at := r.now()
	ring := r.ring.Load()
	snaps := make([]Snapshot, 0, len(names))
	for _, n := range names {
		vs := fns[n].values()
		if ring > 0 {
			vs = append(vs, Value{Name: "RingSize", Unit: "Count", V: float64(ring)})
		}
		snaps = append(snaps, Snapshot{Function: n, Time: at, Values: vs})
	}
	for _, s := range r.sinks {
		if err := s.Publish(ctx, snaps); err != nil {
			r.log.Warn("metrics not published", "sink", fmt.Sprintf("%T", s), "functions", len(snaps), "err", err)
		}
	}
}

// Snapshot is one function's aggregates over one interval.
type Snapshot struct {
	Function string
	Time     time.Time
	Values   []Value
}

// Value is one metric of a Snapshot: a single figure, or for Latency the
// sampled request latencies.
type Value struct {
	Name, Unit string
	V          float64
	Samples    []float64
	// Weight is how many requests each sample stands for (the interval's
	// requests over its samples), so that percentiles over several
	// intervals or replicas weigh each by its traffic, not its sample count.
	Weight float64
}

// Sink receives the aggregates of each interval.
type Sink interface {
	Publish(ctx context.Context, snaps []Snapshot) error
}

// values lists w's metrics. Counts and sums are always present (a zero is
// a figure); the rest only when measured.
func (w *window) values() []Value {
	vs := []Value{
		{Name: "Requests", Unit: "Count", V: float64(w.requests)},
		{Name: "Errors5xx", Unit: "Count", V: float64(w.errors5xx)},
		{Name: "Nacks", Unit: "Count", V: float64(w.nacks)},
		{Name: "ForwardedRequests", Unit: "Count", V: float64(w.forwarded)},
		{Name: "Invocations", Unit: "Count", V: float64(w.invocations)},
		{Name: "ColdStarts", Unit: "Count", V: float64(w.coldStarts)},
		{Name: "Throttles", Unit: "Count", V: float64(w.throttles)},
		{Name: "LaunchFailures", Unit: "Count", V: float64(w.launchFailures)},
		{Name: "RequestMs", Unit: "Milliseconds", V: w.requestMs},
		{Name: "InvocationMs", Unit: "Milliseconds", V: w.invocationMs},
		{Name: "ActiveCpuMs", Unit: "Milliseconds", V: w.activeCPUMs},
		{Name: "IdleMs", Unit: "Milliseconds", V: w.idleMs},
		{Name: "BackgroundMs", Unit: "Milliseconds", V: w.backgroundMs},
		{Name: "QueueWaitMs", Unit: "Milliseconds", V: w.queueWaitMs},
		{Name: "RouterAddedMs", Unit: "Milliseconds", V: w.routerAddedMs},
	}
	if len(w.latencies) > 0 {
		sorted := slices.Clone(w.latencies)
		slices.Sort(sorted)
		vs = append(vs,
			Value{Name: "Latency", Unit: "Milliseconds", Samples: w.latencies, Weight: float64(w.seen) / float64(len(w.latencies))},
			// The interval's own percentiles, for stores that cannot
			// compute percentiles from Latency's samples (moto, say).
			Value{Name: "LatencyP50", Unit: "Milliseconds", V: quantile.Sorted(sorted, 0.50)},
			Value{Name: "LatencyP99", Unit: "Milliseconds", V: quantile.Sorted(sorted, 0.99)},
		)
	}
	if w.inflightN > 0 {
		vs = append(vs, Value{Name: "InFlightPerInstance", Unit: "Count", V: w.inflightSum / w.inflightN})
	}
	if w.requestMs > 0 && w.invocations > 0 {
		vs = append(vs, Value{Name: "ComputeSavedPercent", Unit: "Percent", V: 100 * (1 - w.invocationMs/w.requestMs)})
	}
	return vs
}

// EMF is a Sink writing one Embedded Metric Format line per function to
// w, which CloudWatch Logs turns into metrics (Lambda and ECS awslogs).
func EMF(w io.Writer) Sink { return emfSink{w} }

type emfSink struct{ w io.Writer }

type metricDef struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

func (e emfSink) Publish(_ context.Context, snaps []Snapshot) error {
	if len(snaps) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, s := range snaps {
		m := map[string]any{"Function": s.Function}
		defs := make([]metricDef, 0, len(s.Values))
		for _, v := range s.Values {
			defs = append(defs, metricDef{v.Name, v.Unit})
			if v.Samples != nil {
				m[v.Name] = v.Samples
			} else {
				m[v.Name] = v.V
			}
		}
		m["_aws"] = map[string]any{
			"Timestamp": s.Time.UnixMilli(),
			"CloudWatchMetrics": []map[string]any{{
				"Namespace": Namespace, "Dimensions": [][]string{{"Function"}}, "Metrics": defs,
			}},
		}
		line, err := json.Marshal(m)
		if err != nil {
			return err
		}
		buf.Write(append(line, '\n'))
	}
	_, err := e.w.Write(buf.Bytes())
	return err
}
