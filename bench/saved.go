package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ferryrun/ferry/internal/localrun"
)

type workload struct {
	name          string
	cpuMs, waitMs int
	// clients drive both runs; limit is ferry's streams per instance.
	clients, limit int
}

func (w workload) path() string {
	return fmt.Sprintf("/work?cpu_ms=%d&wait_ms=%d", w.cpuMs, w.waitMs)
}

// Each workload gets the concurrency that suits it: an I/O-heavy service
// waits on many requests at once (one instance can hold 32 of them, so 32
// clients); for the others, the clients' CPU demand stays within this
// machine's 2 cores (3 x 50 ms of every ~100 ms; 2 x 100%): past that the
// load measures the machine, not ferry.
var workloads = []workload{
	{"seed", 50, 50, 3, 10},
	{"I/O-heavy", 5, 500, 32, 32},
	{"CPU-bound", 100, 0, 2, 10},
}

// savedSection: ferry (10 streams per instance) against one request per
// invocation (Lambda's model) on the same emulator, app and load.
func savedSection(ctx context.Context, o options) (*table, error) {
	trials, runFor := 3, 10*time.Second
	if o.short {
		trials, runFor = 1, 5*time.Second
	}
	fns := []localrun.Function{{Name: "single", Limit: 1}}
	for _, w := range workloads {
		if !slices.ContainsFunc(fns, func(f localrun.Function) bool { return f.Limit == w.limit }) {
			fns = append(fns, localrun.Function{Name: fmt.Sprintf("ferry%d", w.limit), Limit: w.limit, Env: o.savedEnv})
		}
	}
	st, err := localrun.Start(ctx, localrun.Config{Dist: o.dist, Functions: fns})
	if err != nil {
		return nil, err
	}
	defer st.Stop()

	t := &table{
		title:   "1. Compute saved: ferry vs one request per invocation (limit 1)",
		command: "go run ./bench -dist dist/bench -only saved",
		header: []string{"workload", "clients", "run", "billed ms/req", "saved", "physical limit", "p50", "p99", "p99 ratio",
			"invocations", "sandboxes", "requests", "errors"},
	}
	var errNotes []string
	for _, w := range workloads {
		type run struct {
			perReq, p50, p99, inv, sbx, reqs, errs []float64
		}
		ferry := fmt.Sprintf("ferry%d", w.limit)
		runs := map[string]*run{ferry: {}, "single": {}}
		for range trials {
			for _, fn := range []string{ferry, "single"} {
				before, err := st.Stats(ctx, fn)
				if err != nil {
					return nil, err
				}
				res := attack(ctx, st.Ingress+w.path(), fn+".localhost", w.clients, runFor)
				if err := st.Quiesce(ctx, fn); err != nil {
					return nil, err
				}
				after, err := st.Stats(ctx, fn)
				if err != nil {
					return nil, err
				}
				r := runs[fn]
				r.perReq = append(r.perReq, float64(after.BilledMs-before.BilledMs)/float64(max(res.requests, 1)))
				r.p50 = append(r.p50, float64(pct(res.latencies, 0.5)))
				r.p99 = append(r.p99, float64(pct(res.latencies, 0.99)))
				r.inv = append(r.inv, float64(after.Invocations-before.Invocations))
				r.sbx = append(r.sbx, float64(after.SandboxesStarted-before.SandboxesStarted))
				r.reqs = append(r.reqs, float64(res.requests))
				r.errs = append(r.errs, float64(res.errors))
				if res.errors > 0 {
					errNotes = append(errNotes, fmt.Sprintf("%s %s: %d of %d requests failed, first: %s", w.name, fn, res.errors, res.requests, res.firstErr))
				}
			}
		}
		f, s := runs[ferry], runs["single"]
		single := median(s.perReq)
		saved := 100 * (1 - median(f.perReq)/single)
		limit := 100 * (1 - float64(w.cpuMs)/single) // billed time = CPU time
		t.add(fmt.Sprintf("%s (%d+%d ms)", w.name, w.cpuMs, w.waitMs), w.clients, fmt.Sprintf("ferry, limit %d", w.limit), fmt.Sprintf("%.1f", median(f.perReq)), percent(saved),
			percent(limit), time.Duration(median(f.p50)), time.Duration(median(f.p99)), ratio(median(f.p99), median(s.p99)),
			int(median(f.inv)), int(median(f.sbx)), int(median(f.reqs)), int(median(f.errs)))
		t.add("", "", "limit 1", fmt.Sprintf("%.1f", single), "", fmt.Sprintf("(%d ms/req)", w.cpuMs), time.Duration(median(s.p50)),
			time.Duration(median(s.p99)), "", int(median(s.inv)), int(median(s.sbx)), int(median(s.reqs)), int(median(s.errs)))
	}
	t.notes = append(t.notes, errNotes...)
	t.notes = append(t.notes,
		fmt.Sprintf("Closed-loop clients (vegeta), %v per run, median of %d trials; ferry and limit 1 alternate within each trial.", runFor, trials),
		"billed ms/req is the emulator's REPORT Billed Duration total over the run's requests; saved = 1 - ferry / limit 1.",
		"physical limit: what ferry would save if billed time were only CPU time (the wait costs nothing).",
		fmt.Sprintf("ferry functions' extra environment: %v (-saved-env).", o.savedEnv),
		"Each sandbox's Go runs on one core (GOMAXPROCS=1: 1769 MB is one vCPU on Lambda), but all sandboxes share this machine's 2 cores, where Lambda gives each its own: CPU-heavy load contends here in both runs alike.")
	return t, nil
}

// burstSection: 1,000 concurrent requests into a cold function with 32
// streams per instance; the router should start ceil(N/C) invocations.
func burstSection(ctx context.Context, o options) (*table, error) {
	const n, limit = 1000, 32
	trials := 3
	if o.short {
		trials = 1
	}
	t := &table{
		title:   fmt.Sprintf("4. Burst: %d concurrent requests into a cold function, %d streams per instance", n, limit),
		command: "go run ./bench -dist dist/bench -only burst",
		header:  []string{"trial", "invocations", "ceil(N/C)", "ratio", "p50", "p99", "max", "errors"},
	}
	var ratios []float64
	for i := range trials {
		// A fresh stack each trial: no warm sandbox, no live instance.
		st, err := localrun.Start(ctx, localrun.Config{Dist: o.dist,
			Functions: []localrun.Function{{Name: "burst", Limit: limit, Concurrency: 200}},
			RouterEnv: []string{"FERRY_ROUTER_QUEUE_LIMIT=5000", "FERRY_ROUTER_QUEUE_TIMEOUT=60s"}})
		if err != nil {
			return nil, err
		}
		lats, errs := burst(ctx, st.Ingress+"/work?cpu_ms=1&wait_ms=200", "burst.localhost", n)
		if err := st.Quiesce(ctx, "burst"); err != nil {
			st.Stop()
			return nil, err
		}
		stats, err := st.Stats(ctx, "burst")
		st.Stop()
		if err != nil {
			return nil, err
		}
		want := (n + limit - 1) / limit
		ratios = append(ratios, float64(stats.Invocations)/float64(want))
		t.add(i+1, stats.Invocations, want, ratio(float64(stats.Invocations), float64(want)),
			pct(lats, 0.5), pct(lats, 0.99), pct(lats, 1), errs)
	}
	t.notes = append(t.notes, fmt.Sprintf("median invocations / ceil(N/C) = %.2f. Each request: 1 ms CPU + 200 ms wait; latency includes the cold start.", median(ratios)))
	return t, nil
}
