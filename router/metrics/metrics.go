// Package metrics aggregates the router's per-function metrics and writes
// them once per interval in CloudWatch Embedded Metric Format (EMF), one
// JSON line per function, never one per request.
package metrics

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// Namespace is the CloudWatch namespace of every metric.
const Namespace = "Ferry"

// maxSamples is EMF's limit on values of one metric in one line.
const maxSamples = 100

// Recorder collects metrics. Its methods are safe for concurrent use.
type Recorder struct {
	// static after New
	out      io.Writer
	interval time.Duration
	now      func() time.Time

	mu  sync.Mutex
	fns map[string]*window // guarded by mu; reset at each flush
}

type window struct {
	requests, errors5xx, nacks, invocations, coldStarts, throttles int64
	requestMs, invocationMs, queueWaitMs, routerAddedMs            float64
	latencies                                                      []float64 // reservoir sample, ms
	seen                                                           int64     // latencies offered to the reservoir
	inflightSum, inflightN                                         float64
}

// New returns a Recorder writing to out every interval (if zero, 60s).
func New(out io.Writer, interval time.Duration) *Recorder {
	if interval <= 0 {
		interval = time.Minute
	}
	return &Recorder{out: out, interval: interval, now: time.Now, fns: map[string]*window{}}
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

// Nack records a stream an instance refused.
func (r *Recorder) Nack(fn string) {
	r.mu.Lock()
	r.win(fn).nacks++
	r.mu.Unlock()
}

// Invocation records an invocation that ended, with its billed duration.
func (r *Recorder) Invocation(fn string, billedMs int64, cold bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.win(fn)
	w.invocations++
	w.invocationMs += float64(billedMs)
	if cold {
		w.coldStarts++
	}
}

// Throttle records an invoke answered 429.
func (r *Recorder) Throttle(fn string) {
	r.mu.Lock()
	r.win(fn).throttles++
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

// Run flushes every interval until ctx ends, then flushes once more.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Flush()
			return
		case <-t.C:
			r.Flush()
		}
	}
}

// Flush writes one EMF line per function with activity and resets.
func (r *Recorder) Flush() {
	r.mu.Lock()
	fns := r.fns
	r.fns = map[string]*window{}
	r.mu.Unlock()
	names := make([]string, 0, len(fns))
	for n := range fns {
		names = append(names, n)
	}
	sort.Strings(names)
	ts := r.now().UnixMilli()
	for _, n := range names {
		line, _ := json.Marshal(fns[n].emf(n, ts))
		r.out.Write(append(line, '\n'))
	}
}

type metricDef struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

func (w *window) emf(fn string, ts int64) map[string]any {
	m := map[string]any{"Function": fn}
	var defs []metricDef
	put := func(name, unit string, v any) {
		defs = append(defs, metricDef{name, unit})
		m[name] = v
	}
	put("Requests", "Count", w.requests)
	put("Errors5xx", "Count", w.errors5xx)
	put("Nacks", "Count", w.nacks)
	put("Invocations", "Count", w.invocations)
	put("ColdStarts", "Count", w.coldStarts)
	put("Throttles", "Count", w.throttles)
	put("RequestMs", "Milliseconds", w.requestMs)
	put("InvocationMs", "Milliseconds", w.invocationMs)
	put("QueueWaitMs", "Milliseconds", w.queueWaitMs)
	put("RouterAddedMs", "Milliseconds", w.routerAddedMs)
	if len(w.latencies) > 0 {
		put("Latency", "Milliseconds", w.latencies)
	}
	if w.inflightN > 0 {
		put("InFlightPerInstance", "Count", w.inflightSum/w.inflightN)
	}
	if w.requestMs > 0 && w.invocations > 0 {
		put("ComputeSavedPercent", "Percent", 100*(1-w.invocationMs/w.requestMs))
	}
	m["_aws"] = map[string]any{
		"Timestamp": ts,
		"CloudWatchMetrics": []map[string]any{{
			"Namespace": Namespace, "Dimensions": [][]string{{"Function"}}, "Metrics": defs,
		}},
	}
	return m
}
