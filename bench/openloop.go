package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
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

// tracePacer makes vegeta send hit i at s.at[i]: open loop, whatever the
// responses do.
type tracePacer struct{ s schedule }

func (p tracePacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= uint64(len(p.s.at)) {
		return 0, true
	}
	return max(p.s.at[hits]-elapsed, 0), false
}

// Rate is required by vegeta.Pacer; the trace's mean rate.
func (p tracePacer) Rate(time.Duration) float64 {
	if len(p.s.at) == 0 {
		return 0
	}
	return float64(len(p.s.at)) / p.s.at[len(p.s.at)-1].Seconds()
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
type target func(i int) vegeta.Target

// openLoop sends s with vegeta and measures each request from its
// scheduled time, so that queueing in ferry (or the client) is counted.
// ok tells a good response.
func openLoop(ctx context.Context, s schedule, tgt target, ok func(*vegeta.Result) bool) openResult {
	// vegeta's workers call the targeter concurrently, and a hit's
	// sequence number (which fixes its scheduled time) need not match the
	// order of targeter calls: each target carries its index in the URL's
	// fragment, which is never sent but comes back in the result, so the
	// kind a hit sent is known.
	var mu sync.Mutex
	i := 0
	targeter := func(t *vegeta.Target) error {
		mu.Lock()
		defer mu.Unlock()
		if i >= len(s.at) {
			return vegeta.ErrNoTargets
		}
		*t = tgt(i)
		t.URL += "#" + strconv.Itoa(i)
		i++
		return nil
	}
	a := vegeta.NewAttacker(vegeta.Workers(64), vegeta.MaxWorkers(4096), vegeta.Connections(4096),
		vegeta.KeepAlive(true), vegeta.Timeout(60*time.Second), vegeta.MaxBody(1<<16))
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	r := openResult{latency: make([]time.Duration, len(s.at)), kinds: slices.Clone(s.kinds)}
	var results []*vegeta.Result
	last := time.Duration(0)
	if n := len(s.at); n > 0 {
		last = s.at[n-1]
	}
	for res := range a.Attack(targeter, tracePacer{s}, last+time.Second, "bench") {
		results = append(results, res)
	}
	// vegeta stamps each hit when it starts; hits are never early, so the
	// attack began at the least (start - schedule).
	var began time.Time
	for _, res := range results {
		if res.Seq < uint64(len(s.at)) {
			if b := res.Timestamp.Add(-s.at[res.Seq]); began.IsZero() || b.Before(began) {
				began = b
			}
		}
	}
	for _, res := range results {
		if res.Seq >= uint64(len(s.at)) {
			continue
		}
		if _, frag, found := strings.Cut(res.URL, "#"); found {
			if j, err := strconv.Atoi(frag); err == nil && j >= 0 && j < len(s.kinds) {
				r.kinds[res.Seq] = s.kinds[j]
			}
		}
		if !ok(res) {
			r.failed++
			if r.first == "" {
				r.first = res.Error
				if r.first == "" {
					r.first = http.StatusText(int(res.Code)) + ": " + string(res.Body)
				}
			}
			continue
		}
		r.latency[res.Seq] = res.Timestamp.Add(res.Latency).Sub(began.Add(s.at[res.Seq]))
	}
	r.failed += len(s.at) - len(results)
	return r
}

// viaRouter sends request i to the router with Host function.localhost.
func viaRouter(ingress, function string, path func(i int) string) target {
	hdr := http.Header{"Host": []string{function + ".localhost"}}
	return func(i int) vegeta.Target {
		return vegeta.Target{Method: "GET", URL: ingress + path(i), Header: hdr}
	}
}

// viaInvoke sends request i as one plain Lambda invocation: the Invoke
// API of the emulator with a Function URL event, as Lambda Web Adapter
// users run today.
func viaInvoke(emulator, function string, path func(i int) string) target {
	url := emulator + "/2015-03-31/functions/" + function + "/invocations"
	return func(i int) vegeta.Target {
		p := path(i)
		raw, query, _ := strings.Cut(p, "?")
		ev, _ := json.Marshal(map[string]any{
			"version": "2.0", "rawPath": raw, "rawQueryString": query,
			"headers": map[string]string{"host": function + ".lambda-url.us-east-1.on.aws"},
			"requestContext": map[string]any{"http": map[string]string{"method": "GET", "path": raw,
				"protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"}},
			"isBase64Encoded": false,
		})
		return vegeta.Target{Method: "POST", URL: url, Body: ev}
	}
}

// routerOK: a 200 from the router.
func routerOK(r *vegeta.Result) bool { return r.Error == "" && r.Code == http.StatusOK }

// invokeOK: the invoke succeeded with no function error and the function's
// HTTP answer was 200.
func invokeOK(r *vegeta.Result) bool {
	if r.Error != "" || r.Code != http.StatusOK || r.Headers.Get("X-Amz-Function-Error") != "" {
		return false
	}
	var out struct {
		StatusCode int `json:"statusCode"`
	}
	return json.Unmarshal(r.Body, &out) == nil && out.StatusCode == http.StatusOK
}
