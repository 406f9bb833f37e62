// Command demo is `make demo`: ferry's main job on one machine. It starts
// the Lambda emulator (the real bootstrap + the Go sample app as two
// functions) and ferry-router, then drives the same closed-loop load at two
// routes in turn: one with ferry's per-instance limit, one with limit 1
// (what Lambda does today). It prints one table and stops everything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ferryrun/ferry/internal/localrun"
)

type options struct {
	dist        string
	duration    time.Duration
	concurrency int
	limit       int
	path        string
}

func main() {
	var o options
	flag.StringVar(&o.dist, "dist", "dist/demo", "directory with bootstrap, goapp, lambda-emulator and ferry-router")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "load duration per run")
	flag.IntVar(&o.concurrency, "c", 4, "concurrent clients")
	flag.IntVar(&o.limit, "limit", 10, "ferry's per-instance limit")
	flag.StringVar(&o.path, "path", "/work?cpu_ms=50&wait_ms=50", "request path: the seed workload, 50 ms CPU + 50 ms wait")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// result is one run's row.
type result struct {
	name                   string
	limit                  int
	requests, errors       int64
	invocations, sandboxes int64
	p50, p99               time.Duration
	billedMs               int64
}

func run(ctx context.Context, o options, out io.Writer) error {
	dist, err := filepath.Abs(o.dist)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "starting the Lambda emulator and ferry-router")
	st, err := localrun.Start(ctx, localrun.Config{Dist: dist, Functions: []localrun.Function{
		{Name: "ferry", Limit: o.limit}, {Name: "single", Limit: 1},
	}})
	if err != nil {
		return err
	}
	defer st.Stop()

	var rows []result
	for _, r := range []struct {
		name, host string
		limit      int
	}{{"ferry", "ferry.localhost", o.limit}, {"single", "single.localhost", 1}} {
		fmt.Fprintf(out, "\n%s (limit %d): %d clients x %v of GET %s\n", r.name, r.limit, o.concurrency, o.duration, o.path)
		row, err := drive(ctx, out, st.Ingress, r.host, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  waiting for %s's invocations to end...\n", r.name)
		if err := st.Quiesce(ctx, r.name); err != nil {
			return err
		}
		stats, err := st.Stats(ctx, r.name)
		if err != nil {
			return err
		}
		row.name, row.limit = r.name, r.limit
		row.invocations, row.sandboxes, row.billedMs = stats.Invocations, stats.SandboxesStarted, stats.BilledMs
		rows = append(rows, row)
	}
	printTable(out, rows)
	return nil
}

// drive runs o.concurrency clients for o.duration and reports progress.
func drive(ctx context.Context, out io.Writer, base, host string, o options) (result, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency}}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		requests  atomic.Int64
		errs      atomic.Int64
	)
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequest("GET", base+o.path, nil)
				req.Host = host
				start := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				d := time.Since(start)
				requests.Add(1)
				if err != nil {
					errs.Add(1)
					continue
				}
				mu.Lock()
				latencies = append(latencies, d)
				mu.Unlock()
			}
		})
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	start := time.Now()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			fmt.Fprintf(out, "  %4.0fs  %6d requests  %d errors\n", time.Since(start).Seconds(), requests.Load(), errs.Load())
		}
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return result{}, err
	}
	slices.Sort(latencies)
	return result{requests: requests.Load(), errors: errs.Load(), p50: pct(latencies, 0.50), p99: pct(latencies, 0.99)}, nil
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(float64(len(sorted))*p), len(sorted)-1)]
}

func printTable(out io.Writer, rows []result) {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tlimit\trequests\terrors\tinvocations\tsandboxes\tp50\tp99\tbilled ms\tbilled ms/request\t")
	for _, r := range rows {
		perReq := 0.0
		if r.requests > 0 {
			perReq = float64(r.billedMs) / float64(r.requests)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%v\t%v\t%d\t%.1f\t\n", r.name, r.limit, r.requests, r.errors,
			r.invocations, r.sandboxes, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.billedMs, perReq)
	}
	tw.Flush()
	if len(rows) == 2 && rows[1].billedMs > 0 && rows[0].requests > 0 && rows[1].requests > 0 {
		// Per request, so a run that served more requests is not penalized.
		f := float64(rows[0].billedMs) / float64(rows[0].requests)
		s := float64(rows[1].billedMs) / float64(rows[1].requests)
		fmt.Fprintf(out, "\ncompute saved = 1 - ferry billed / limit-1 billed (per request) = %.1f%%\n", 100*(1-f/s))
		if rows[1].p99 > 0 {
			fmt.Fprintf(out, "p99 latency ferry / limit-1 = %.2fx\n", float64(rows[0].p99)/float64(rows[1].p99))
		}
	}
}
