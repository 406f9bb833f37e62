package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/localstack/localrun"
	"github.com/ferryrun/ferry/router/pool"
)

// soakKinds and soakWeights are the soak's steady mix: API handlers, long
// waits and some half-CPU requests on one function, about a quarter of a
// core of CPU demand at soakRate.
var (
	soakKinds   = []kind{{"api", cpuWait(10, 100)}, ioKind, {"seed", cpuWait(50, 50)}}
	soakWeights = []float64{0.6, 0.3, 0.1}
)

const soakRate = 20 // requests per second

// soakSample is the router and the function, sampled once a minute.
type soakSample struct {
	requests, errors    int
	p50, p99            time.Duration
	rssMB               float64
	goroutines, fds     int
	instances, launches int
	firstErr            string
}

// runSoak is make soak: steady mixed open-loop load through the local
// stack for d, a row a minute of what the router holds (memory,
// goroutines, open descriptors) and what the function runs (live
// instances, invocations started), then the totals. It fails if a request
// failed. Memory that grows minute after minute under steady load is a
// leak; the rows show it.
func runSoak(ctx context.Context, o options, d time.Duration, out io.Writer) error {
	const mem = 1769
	fn := fnName("soak", mem)
	lc := localrun.Config{Dist: o.dist, Functions: []localrun.Function{{Name: fn, MemoryMB: mem, Concurrency: 300}},
		RouterEnv: []string{"FERRY_ROUTER_PPROF=true"}}
	closeLogs, err := o.keepLogs(&lc, "soak")
	if err != nil {
		return err
	}
	defer closeLogs()
	st, err := localrun.Start(ctx, lc)
	if err != nil {
		return err
	}
	defer st.Stop()
	paths := make([]string, len(soakKinds))
	for i, k := range soakKinds {
		paths[i] = k.path()
	}
	fmt.Fprintf(out, "soak: %d requests/s for %v (60%% API 10+100 ms, 30%% I/O 5+500 ms, 10%% seed 50+50 ms) through ferry, a row a minute\n\n", soakRate, d)
	// Fixed widths, not a tabwriter: a row is printed as its minute ends.
	const row = "%6v %9v %7v %8v %8v %14v %11v %9v %10v %9v\n"
	fmt.Fprintf(out, row, "minute", "requests", "errors", "p50", "p99", "router RSS MB", "goroutines", "open fds", "instances", "launches")
	var all []soakSample
	for minute := 1; time.Duration(minute-1)*time.Minute < d && ctx.Err() == nil; minute++ {
		window := min(time.Minute, d-time.Duration(minute-1)*time.Minute)
		s := poisson(uint64(minute), soakRate, window, soakWeights)
		res := openLoop(ctx, s, viaRouter(st.Ingress, fn, func(i int) string { return paths[s.kinds[i]] }), routerOK)
		sm, err := sampleRouter(ctx, st, fn)
		if err != nil {
			return err
		}
		lat := res.latencies(s, -1)
		sm.requests, sm.errors, sm.firstErr = len(s.at), res.failed, res.first
		sm.p50, sm.p99 = quantile.Of(lat, 0.5), quantile.Of(lat, 0.99)
		all = append(all, sm)
		fmt.Fprintf(out, row, minute, sm.requests, sm.errors, sm.p50.Round(time.Millisecond), sm.p99.Round(time.Millisecond),
			fmt.Sprintf("%.1f", sm.rssMB), sm.goroutines, sm.fds, sm.instances, sm.launches)
	}
	if len(all) == 0 {
		return ctx.Err()
	}
	var requests, errors int
	firstErr := ""
	for _, sm := range all {
		requests += sm.requests
		errors += sm.errors
		if firstErr == "" {
			firstErr = sm.firstErr
		}
	}
	first, last := all[0], all[len(all)-1]
	fmt.Fprintf(out, "\n%d requests, %d errors. Router RSS %.1f MB after the first minute, %.1f MB after the last; goroutines %d then %d; open fds %d then %d.\n",
		requests, errors, first.rssMB, last.rssMB, first.goroutines, last.goroutines, first.fds, last.fds)
	if errors > 0 {
		return fmt.Errorf("%d of %d requests failed; the first: %s", errors, requests, firstErr)
	}
	return nil
}

// sampleRouter reads the router's memory and descriptors from /proc, its
// goroutines from its profile endpoint, and the function's pool.
func sampleRouter(ctx context.Context, st *localrun.Stack, fn string) (soakSample, error) {
	var sm soakSample
	rss, err := st.RSS()
	if err != nil {
		return sm, err
	}
	sm.rssMB = float64(rss) / (1 << 20)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", st.RouterPID))
	if err != nil {
		return sm, err
	}
	sm.fds = len(fds)
	req, _ := http.NewRequestWithContext(ctx, "GET", st.Admin+"/debug/pprof/goroutine?debug=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return sm, err
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	resp.Body.Close()
	// "goroutine profile: total N"
	if f := strings.Fields(strings.SplitN(string(head), "\n", 2)[0]); len(f) == 4 {
		sm.goroutines, _ = strconv.Atoi(f[3])
	}
	var pools []pool.State
	if err := localrun.GetJSON(ctx, st.Admin+"/pool", &pools); err != nil {
		return sm, err
	}
	for _, p := range pools {
		if p.Function == fn {
			sm.instances, sm.launches = len(p.Instances), int(p.Stats.Launches)
		}
	}
	return sm, nil
}
