// Package load is the one load generator of ferry's tests, demo and bench,
// over vegeta: open loop (each request sent at its scheduled time, whatever
// the others are doing, and timed from that time, so that queueing is
// counted) and closed loop (clients that each send their next request when
// the last one ends).
package load

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Target is one request to send.
type Target = vegeta.Target

// Schedule is when each request of an open-loop run is due, from its
// start, in order.
type Schedule []time.Duration

// Constant is rate requests a second for d, evenly spaced.
func Constant(rate float64, d time.Duration) Schedule {
	s := make(Schedule, int(rate*d.Seconds()))
	for i := range s {
		s[i] = time.Duration(float64(i) / rate * float64(time.Second))
	}
	return s
}

// Options shape a run.
type Options struct {
	// Timeout bounds each request; if zero, 60 s. A request past it ends
	// with vegeta's timeout error.
	Timeout time.Duration
	// NoKeepAlive sends each request on a connection of its own.
	NoKeepAlive bool
	// MaxBody keeps at most this many bytes of each body; if zero, 64 KiB.
	MaxBody int64
}

func (o Options) attacker(workers, maxWorkers uint64, conns int) *vegeta.Attacker {
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 64 << 10
	}
	return vegeta.NewAttacker(vegeta.Workers(workers), vegeta.MaxWorkers(maxWorkers), vegeta.Connections(conns),
		vegeta.KeepAlive(!o.NoKeepAlive), vegeta.Timeout(o.Timeout), vegeta.MaxBody(o.MaxBody))
}

// Hit is one request's outcome.
type Hit struct {
	// Seq is the request's place in the run (in an open loop, which due
	// time it had) and Target the index of the target it sent: vegeta's
	// workers build targets concurrently, so the two can differ.
	Seq, Target int
	Due         time.Duration // from the start of the run; 0 in a closed loop
	Took        time.Duration // from Due (open loop) or from its send (closed) to the end of its response
	Code        int           // 0 if no response came
	Header      http.Header
	Body        []byte
	Err         string // vegeta's error: the transport's, or the status for one not 2xx/3xx
	URL         string
}

// Open sends request i of s at s[i], built by target(i), until s is done
// or ctx ends. It returns a Hit for every request sent.
func Open(ctx context.Context, s Schedule, target func(i int) Target, o Options) []Hit {
	// vegeta's workers call the targeter concurrently, and a hit's
	// sequence number (which fixes its due time) need not match the order
	// of targeter calls: each target carries its index in the URL's
	// fragment, which is never sent but comes back in the result.
	var mu sync.Mutex
	next := 0
	targeter := func(t *vegeta.Target) error {
		mu.Lock()
		defer mu.Unlock()
		if next >= len(s) {
			return vegeta.ErrNoTargets
		}
		*t = target(next)
		t.URL += "#" + strconv.Itoa(next)
		next++
		return nil
	}
	a := o.attacker(64, 4096, 4096)
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	var last time.Duration
	if len(s) > 0 {
		last = s[len(s)-1]
	}
	var results []*vegeta.Result
	for res := range a.Attack(targeter, pacer(s), last+time.Second, "ferry") {
		results = append(results, res)
	}
	// vegeta stamps each hit when it starts; hits are never early, so the
	// run began at the least (start - due).
	var began time.Time
	for _, res := range results {
		if res.Seq < uint64(len(s)) {
			if b := res.Timestamp.Add(-s[res.Seq]); began.IsZero() || b.Before(began) {
				began = b
			}
		}
	}
	hits := make([]Hit, 0, len(results))
	for _, res := range results {
		if res.Seq >= uint64(len(s)) {
			continue
		}
		h := hit(res)
		h.Seq, h.Due = int(res.Seq), s[res.Seq]
		h.Took = res.Timestamp.Add(res.Latency).Sub(began.Add(h.Due))
		hits = append(hits, h)
	}
	return hits
}

// Closed runs clients that each send target's request, the next when the
// last ends, for d or until ctx ends.
func Closed(ctx context.Context, target Target, clients int, d time.Duration, o Options) []Hit {
	if clients < 1 {
		return nil // no client sends anything (vegeta would wait for one until stopped)
	}
	a := o.attacker(uint64(clients), uint64(clients), clients)
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	var hits []Hit
	// Rate 0 with a worker cap: as fast as the clients go, a closed loop.
	for res := range a.Attack(vegeta.NewStaticTargeter(target), vegeta.Rate{Freq: 0}, d, "ferry") {
		h := hit(res)
		h.Seq, h.Took = int(res.Seq), res.Latency
		hits = append(hits, h)
	}
	return hits
}

func hit(res *vegeta.Result) Hit {
	h := Hit{Code: int(res.Code), Header: res.Headers, Body: res.Body, Err: res.Error, URL: res.URL}
	if u, frag, found := strings.Cut(res.URL, "#"); found {
		h.URL = u
		h.Target, _ = strconv.Atoi(frag)
	}
	return h
}

// pacer makes vegeta send hit i at s[i].
type pacer Schedule

func (p pacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= uint64(len(p)) {
		return 0, true
	}
	return max(p[hits]-elapsed, 0), false
}

// Rate is required by vegeta.Pacer: the schedule's mean rate.
func (p pacer) Rate(time.Duration) float64 {
	if len(p) == 0 || p[len(p)-1] <= 0 {
		return 0
	}
	return float64(len(p)) / p[len(p)-1].Seconds()
}
