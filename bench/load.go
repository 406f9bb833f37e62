package main

import (
	"context"
	"net/http"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// loadResult is what one closed-loop load measured.
type loadResult struct {
	requests, errors int64
	latencies        []time.Duration // of successful requests
	elapsed          time.Duration
	firstErr         string
}

func (l loadResult) rps() float64 {
	if l.elapsed <= 0 {
		return 0
	}
	return float64(l.requests) / l.elapsed.Seconds()
}

// attack runs c closed-loop clients (each sends its next request when the
// last one ends) against url for d, with vegeta. host, if set, is the Host
// header: the router routes by it.
func attack(ctx context.Context, url, host string, c int, d time.Duration) loadResult {
	hdr := http.Header{}
	if host != "" {
		hdr.Set("Host", host)
	}
	targeter := vegeta.NewStaticTargeter(vegeta.Target{Method: "GET", URL: url, Header: hdr})
	a := vegeta.NewAttacker(vegeta.Workers(uint64(c)), vegeta.MaxWorkers(uint64(c)), vegeta.Connections(c),
		vegeta.KeepAlive(true), vegeta.Timeout(60*time.Second))
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	var r loadResult
	start := time.Now()
	// Rate 0 with a worker cap: as fast as c workers go, a closed loop.
	for res := range a.Attack(targeter, vegeta.Rate{Freq: 0}, d, "bench") {
		r.requests++
		if res.Error != "" || res.Code != http.StatusOK {
			r.errors++
			if r.firstErr == "" {
				r.firstErr = res.Error
				if r.firstErr == "" {
					r.firstErr = http.StatusText(int(res.Code))
				}
			}
			continue
		}
		r.latencies = append(r.latencies, res.Latency)
	}
	r.elapsed = time.Since(start)
	return r
}
