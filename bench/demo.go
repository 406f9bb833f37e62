package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/localstack/localrun"
)

// demoWorkloads are what make demo shows: a typical API handler, where
// sharing saves, and the seed workload, half CPU, where sharing a vCPU
// would slow every request and ferry should cost what plain Lambda costs.
var demoWorkloads = []string{"api", "seed"}

// runDemo is make demo: for each demo workload, the same Poisson
// arrivals through ferry and as plain Lambda (one Invoke per request), on
// the local Lambda with each sandbox held to its vCPU, and a line that
// says what ferry saved and what it cost in latency.
func runDemo(ctx context.Context, o options, d time.Duration, out io.Writer) error {
	const mem = 1769 // one vCPU
	st, err := localrun.Start(ctx, localrun.Config{Dist: o.dist, Functions: []localrun.Function{
		{Name: fnName("ferry", mem), MemoryMB: mem, Concurrency: 300},
		{Name: fnName("plain", mem), MemoryMB: mem, Concurrency: 300},
	}})
	if err != nil {
		return err
	}
	defer st.Stop()
	fmt.Fprintf(out, "ferry against plain Lambda (one invocation per request), on this machine's local Lambda:\n"+
		"the same Poisson arrivals through each, %v per workload, 1769 MB sandboxes held to one vCPU each.\n\n", d)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\trun\trequests\terrors\tinvocations\tbilled ms\tbilled ms/request\tp50\tp99\t")
	var lines []string
	for _, name := range demoWorkloads {
		w, _ := workloadByName(name)
		rate := w.rate("moderate")
		paths := make([]string, len(w.kinds))
		for i, k := range w.kinds {
			paths[i] = k.path()
		}
		// Warm both, off the books: cold starts are section 3's subject.
		warm := poisson(1, rate, time.Second, w.weights)
		for _, run := range []string{"ferry", "plain"} {
			if _, err := measure(ctx, st, run, mem, warm, paths); err != nil {
				return err
			}
		}
		s := poisson(seedOf(combo{w: w, mem: mem, rate: "demo"}, 0), rate, d, w.weights)
		// Ideal plain Lambda and the oracle, from the trace itself.
		reqs, ideal, _ := traceCosts(w, s, 1)
		oracle := 100 * (1 - oracleBilled(reqs, 1, 10)/ideal)
		got := map[string]measured{}
		for _, run := range []string{"ferry", "plain"} {
			m, err := measure(ctx, st, run, mem, s, paths)
			if err != nil {
				return err
			}
			got[run] = m
			lat := m.res.latencies(s, -1)
			perReq := 0.0
			if n := len(s.at); n > 0 {
				perReq = float64(m.billed) / float64(n)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%.1f\t%v\t%v\t\n", w.label(), run, len(s.at), m.res.failed,
				m.invocations, m.billed, perReq, quantile.Of(lat, 0.5).Round(time.Millisecond), quantile.Of(lat, 0.99).Round(time.Millisecond))
		}
		f, p := got["ferry"], got["plain"]
		fl, pl := f.res.latencies(s, -1), p.res.latencies(s, -1)
		lines = append(lines, fmt.Sprintf("%s %.0f requests/s: ferry billed %s than plain Lambda; p50 %s, p99 %s plain Lambda's.\n"+
			"    Against ideal plain Lambda (each request its CPU + wait): ferry saved %.1f%%; a clairvoyant placement (the oracle), if CPU may wait 10 ms: %.1f%%.",
			name, rate, savedWords(f.billed, p.billed), ratio(ms(quantile.Of(fl, 0.5)), ms(quantile.Of(pl, 0.5))), ratio(ms(quantile.Of(fl, 0.99)), ms(quantile.Of(pl, 0.99))),
			100*(1-float64(f.billed)/ideal), oracle))
		if p.contended > 0 {
			// Where ideal plain Lambda's figure went on this machine.
			lines = append(lines, fmt.Sprintf("    This machine's contention (sandboxes waiting for cores their vCPU entitled them to, which Lambda does not have): %.0f%% of plain Lambda's billed ms, %.0f%% of ferry's.",
				100*ms(p.contended)/float64(p.billed), 100*ms(f.contended)/float64(max(f.billed, 1))))
		}
	}
	tw.Flush()
	fmt.Fprintln(out)
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintln(out, "\nmake bench measures every workload, rate and size against plain Lambda and the clairvoyant oracle (bench/RESULTS.md).")
	return nil
}

// savedWords says how ferry's billed time compares: "41.2% less" or
// "3.0% more".
func savedWords(ferry, plain int64) string {
	if plain <= 0 {
		return "an unknown amount less"
	}
	s := 100 * (1 - float64(ferry)/float64(plain))
	if s >= 0 {
		return fmt.Sprintf("%.1f%% less", s)
	}
	return fmt.Sprintf("%.1f%% more", -s)
}
