package main

import (
	"context"
	"fmt"

	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/localstack/localrun"
)

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
			quantile.Of(lats, 0.5), quantile.Of(lats, 0.99), quantile.Of(lats, 1), errs)
	}
	t.notes = append(t.notes, fmt.Sprintf("median invocations / ceil(N/C) = %.2f. Each request: 1 ms CPU + 200 ms wait; latency includes the cold start.", median(ratios)))
	return t, nil
}
