package main

import (
	"context"
	"net/http"
	"time"

	"github.com/ferryrun/ferry/internal/load"
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
// last one ends) against url for d (internal/load). host, if set, is the
// Host header: the router routes by it.
func attack(ctx context.Context, url, host string, c int, d time.Duration) loadResult {
	hdr := http.Header{}
	if host != "" {
		hdr.Set("Host", host)
	}
	var r loadResult
	start := time.Now()
	for _, h := range load.Closed(ctx, load.Target{Method: "GET", URL: url, Header: hdr}, c, d, load.Options{}) {
		r.requests++
		if h.Err != "" || h.Code != http.StatusOK {
			r.errors++
			if r.firstErr == "" {
				r.firstErr = h.Err
				if r.firstErr == "" {
					r.firstErr = http.StatusText(h.Code)
				}
			}
			continue
		}
		r.latencies = append(r.latencies, h.Took)
	}
	r.elapsed = time.Since(start)
	return r
}
