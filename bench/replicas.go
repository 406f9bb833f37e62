package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/ferryrun/ferry/internal/load"
	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/localstack/localrun"
)

// replicasResult is results.json's "replicas": several router replicas
// sharing one function against one router, behind the same balancer, on
// the same arrivals. The ratios and deltas are of the many against the one.
type replicasResult struct {
	Replicas          int     `json:"replicas"`
	InvocationsRatio  float64 `json:"invocations_ratio"`
	SavedDeltaPts     float64 `json:"saved_delta_pts"`
	ForwardAddedP50Ms float64 `json:"forward_added_p50_ms"`
	Errors            int     `json:"errors"`
	Workload          string  `json:"workload"`
	RatePerS          float64 `json:"rate_per_s"`
	Trials            int     `json:"trials"`
	MeasuredAt        string  `json:"measured_at"` // this section may run alone (-only replicas)
	// Each run's medians: one router, then the replicas.
	Runs []replicasRun `json:"runs"`
}

type replicasRun struct {
	Replicas    int     `json:"replicas"`
	Invocations int     `json:"invocations"`
	SavedPct    float64 `json:"saved_pct"` // against ideal plain Lambda
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Errors      int     `json:"errors"`
}

// replicaCount is how many replicas the section compares with one.
const replicaCount = 3

// hopFn is the function the forward hop is measured on.
const hopFn = "hop"

// replicasSection runs the I/O-heavy workload through nginx in front of
// one router and in front of three that share the function, one after
// the other on the same Poisson arrivals; then measures the forward hop
// alone: the same light requests sent straight to the function's owner
// and to a replica that forwards them to it, interleaved.
func replicasSection(ctx context.Context, o options) (*table, error) {
	w, _ := workloadByName("io-heavy")
	rate := w.rate("moderate")
	trials, runFor := 3, 20*time.Second
	if o.short {
		trials, runFor = 1, 8*time.Second
	}
	const mem = 1769
	fn := fnName("ferry", mem)
	stacks := map[int]*localrun.Stack{}
	for _, n := range []int{1, replicaCount} {
		// The hop is measured on a function of its own: its light traffic
		// must not teach the measured function's pool anything.
		st, stop, err := o.start(ctx, localrun.Config{Dist: o.dist, Replicas: n, Balancer: true,
			Functions: []localrun.Function{{Name: fn, MemoryMB: mem, Concurrency: 300}, {Name: hopFn, MemoryMB: mem, MinInstances: 1}}},
			fmt.Sprintf("replicas-%d", n))
		if err != nil {
			return nil, err
		}
		defer stop()
		stacks[n] = st
	}
	paths := []string{w.kinds[0].path()}
	warm := poisson(1, rate, 2*time.Second, w.weights)
	for _, n := range []int{1, replicaCount} {
		if _, err := measure(ctx, stacks[n], "ferry", mem, warm, paths); err != nil {
			return nil, err
		}
	}
	type trial struct{ invocations, saved, p50, p99, errors float64 }
	per := map[int][]trial{}
	var hops []float64
	for tr := range trials {
		s := poisson(uint64(1000+tr), rate, runFor, w.weights)
		_, ideal, _ := traceCosts(w, s, 1)
		for _, n := range []int{1, replicaCount} {
			m, err := measure(ctx, stacks[n], "ferry", mem, s, paths)
			if err != nil {
				return nil, err
			}
			all := m.res.latencies(s, -1)
			per[n] = append(per[n], trial{invocations: float64(m.invocations), saved: 100 * (1 - float64(m.billed)/ideal),
				p50: ms(quantile.Of(all, 0.5)), p99: ms(quantile.Of(all, 0.99)), errors: float64(m.res.failed)})
			if m.res.failed > 0 {
				fmt.Printf("  replicas %d trial %d: %d of %d failed, first: %s\n", n, tr+1, m.res.failed, len(s.at), m.res.first)
			}
		}
		hop, err := forwardHop(ctx, stacks[replicaCount], hopFn, uint64(2000+tr), runFor/2)
		if err != nil {
			return nil, err
		}
		hops = append(hops, hop)
	}
	col := func(n int, f func(trial) float64) float64 {
		var v []float64
		for _, t := range per[n] {
			v = append(v, f(t))
		}
		return median(v)
	}
	var ratios, deltas []float64
	errs := 0
	for i := range trials {
		one, many := per[1][i], per[replicaCount][i]
		ratios = append(ratios, many.invocations/max(one.invocations, 1))
		deltas = append(deltas, many.saved-one.saved)
		errs += int(one.errors + many.errors)
	}
	res := &replicasResult{Replicas: replicaCount, InvocationsRatio: round(median(ratios), 2), SavedDeltaPts: round(median(deltas), 1),
		ForwardAddedP50Ms: round(median(hops), 2), Errors: errs, Workload: w.name, RatePerS: rate, Trials: trials,
		MeasuredAt: time.Now().UTC().Format(time.RFC3339)}
	t := &table{
		title:   fmt.Sprintf("Router replicas: %d sharing a function against one, behind nginx, open loop", replicaCount),
		command: "go run ./bench -dist dist/bench -only replicas",
		header:  []string{"routers", "invocations", "saved", "p50", "p99", "errors"},
	}
	for _, n := range []int{1, replicaCount} {
		run := replicasRun{Replicas: n, Invocations: int(col(n, func(t trial) float64 { return t.invocations })),
			SavedPct: round(col(n, func(t trial) float64 { return t.saved }), 1),
			P50Ms:    round(col(n, func(t trial) float64 { return t.p50 }), 1), P99Ms: round(col(n, func(t trial) float64 { return t.p99 }), 1),
			Errors: int(col(n, func(t trial) float64 { return t.errors }))}
		res.Runs = append(res.Runs, run)
		t.add(n, run.Invocations, percent(run.SavedPct), msDur(run.P50Ms), msDur(run.P99Ms), run.Errors)
	}
	o.results.Replicas = res
	t.notes = append(t.notes,
		fmt.Sprintf("%s at %.0f requests/s for %v, median of %d trials; both runs replay the same arrivals. saved: against ideal plain Lambda.", w.label(), rate, runFor, trials),
		fmt.Sprintf("%d replicas against 1: invocations %.2fx, saved %+.1f points; errors %d in all.", replicaCount, res.InvocationsRatio, res.SavedDeltaPts, errs),
		fmt.Sprintf("The forward hop: p50 of light requests sent to a replica that forwards them, minus p50 of the same sent to the owner, interleaved: %+.2f ms.", res.ForwardAddedP50Ms))
	return t, nil
}

// forwardHop sends light requests (no CPU, no wait, 40 a second, to a
// function that keeps one instance live) for fn for d, open loop, alternately
// to the replica that owns fn and to one that does not (which forwards
// them), straight to their ingresses; it returns the difference of their
// p50 latencies in ms.
func forwardHop(ctx context.Context, st *localrun.Stack, fn string, seed uint64, d time.Duration) (float64, error) {
	var ring struct {
		Owners map[string][]string `json:"owners"`
	}
	if err := localrun.GetJSON(ctx, st.Admins[0]+"/ring", &ring); err != nil {
		return 0, err
	}
	owners := ring.Owners[fn]
	if len(owners) == 0 {
		return 0, fmt.Errorf("no owner of %s in the ring", fn)
	}
	owner := slices.Index(st.Peers, owners[0])
	if owner < 0 {
		return 0, fmt.Errorf("the owner %s is none of the replicas %v", owners[0], st.Peers)
	}
	other := (owner + 1) % len(st.Ingresses)
	s := poisson(seed, 40, d, []float64{0.5, 0.5})
	hdr := http.Header{"Host": []string{fn + ".localhost"}}
	res := openLoop(ctx, s, func(i int) load.Target {
		ingress := st.Ingresses[owner]
		if s.kinds[i] == 1 {
			ingress = st.Ingresses[other]
		}
		return load.Target{Method: "GET", URL: ingress + "/work", Header: hdr}
	}, routerOK)
	if res.failed > 0 {
		return 0, fmt.Errorf("forward hop: %d of %d requests failed, first: %s", res.failed, len(s.at), res.first)
	}
	direct, forwarded := quantile.Of(res.latencies(s, 0), 0.5), quantile.Of(res.latencies(s, 1), 0.5)
	return ms(forwarded - direct), nil
}
