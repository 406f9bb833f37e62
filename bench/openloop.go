package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferryrun/ferry/internal/load"
)

// schedule is an open-loop arrival trace: when each request is due, from
// the start of the run, and which of the workload's kinds it is.
type schedule struct {
	at    []time.Duration
	kinds []int
}

// poisson draws arrivals at rate per second for d, each of kind i with
// weight weights[i], from a seeded source: every run of one trial replays
// the same trace.
func poisson(seed uint64, rate float64, d time.Duration, weights []float64) schedule {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var s schedule
	total := 0.0
	for _, w := range weights {
		total += w
	}
	for t := time.Duration(rng.ExpFloat64() / rate * float64(time.Second)); t < d; t += time.Duration(rng.ExpFloat64() / rate * float64(time.Second)) {
		s.at = append(s.at, t)
		k, x := 0, rng.Float64()*total
		for k < len(weights)-1 && x >= weights[k] {
			x -= weights[k]
			k++
		}
		s.kinds = append(s.kinds, k)
	}
	return s
}

// openResult is what one open-loop run measured, per request in trace
// order.
type openResult struct {
	latency []time.Duration // from the request's scheduled send time; 0 if it failed
	kinds   []int           // the kind each request actually sent was
	failed  int
	first   string // the first failure
}

// latencies returns the successful requests' latencies whose kind is k,
// or all of them for k < 0.
func (r openResult) latencies(s schedule, k int) []time.Duration {
	var out []time.Duration
	for i, l := range r.latency {
		if l > 0 && (k < 0 || r.kinds[i] == k) {
			out = append(out, l)
		}
	}
	return out
}

// target builds request i.
type target func(i int) load.Target

// openLoop sends s (internal/load's open loop) and measures each request
// from its scheduled time, so that queueing in ferry (or the client) is
// counted. ok tells a good response.
func openLoop(ctx context.Context, s schedule, tgt target, ok func(load.Hit) bool) openResult {
	r := openResult{latency: make([]time.Duration, len(s.at)), kinds: slices.Clone(s.kinds)}
	hits := load.Open(ctx, load.Schedule(s.at), tgt, load.Options{Timeout: 60 * time.Second})
	for _, h := range hits {
		// The kind a slot's request was is the kind of the target it sent.
		if h.Target >= 0 && h.Target < len(s.kinds) {
			r.kinds[h.Seq] = s.kinds[h.Target]
		}
		if !ok(h) {
			r.failed++
			if r.first == "" {
				r.first = h.Err
				if r.first == "" {
					r.first = http.StatusText(h.Code) + ": " + string(h.Body)
				}
			}
			continue
		}
		r.latency[h.Seq] = h.Took
	}
	r.failed += len(s.at) - len(hits)
	return r
}

// viaRouter sends request i to the router with Host function.localhost.
func viaRouter(ingress, function string, path func(i int) string) target {
	hdr := http.Header{"Host": []string{function + ".localhost"}}
	return func(i int) load.Target {
		return load.Target{Method: "GET", URL: ingress + path(i), Header: hdr}
	}
}

// viaInvoke sends request i as one plain Lambda invocation: the Invoke
// API of the emulator with a Function URL event, as Lambda Web Adapter
// users run today.
func viaInvoke(emulator, function string, path func(i int) string) target {
	url := emulator + "/2015-03-31/functions/" + function + "/invocations"
	return func(i int) load.Target {
		p := path(i)
		raw, query, _ := strings.Cut(p, "?")
		ev, _ := json.Marshal(map[string]any{
			"version": "2.0", "rawPath": raw, "rawQueryString": query,
			"headers": map[string]string{"host": function + ".lambda-url.us-east-1.on.aws"},
			"requestContext": map[string]any{"http": map[string]string{"method": "GET", "path": raw,
				"protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"}},
			"isBase64Encoded": false,
		})
		return load.Target{Method: "POST", URL: url, Body: ev}
	}
}

// routerOK: a 200 from the router.
func routerOK(h load.Hit) bool { return h.Err == "" && h.Code == http.StatusOK }

// invokeOK: the invoke succeeded with no function error and the function's
// HTTP answer was 200.
func invokeOK(h load.Hit) bool {
	if h.Err != "" || h.Code != http.StatusOK || h.Header.Get("X-Amz-Function-Error") != "" {
		return false
	}
	var out struct {
		StatusCode int `json:"statusCode"`
	}
	return json.Unmarshal(h.Body, &out) == nil && out.StatusCode == http.StatusOK
}
