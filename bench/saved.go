package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/localstack/localrun"
)

// blindEnv turns the bootstrap's CPU admission off: the fixed-limit runs
// pack up to their limit whatever the CPU does, as a plain
// concurrency-per-instance setting would.
var blindEnv = map[string]string{"FERRY_CPU_ADMISSION": "off"}

// savedRow is one run's figures in results.json.
type savedRow struct {
	Workload string  `json:"workload"`
	MemoryMB int     `json:"memory_mb"`
	Arrivals string  `json:"arrivals"` // open or closed
	Rate     string  `json:"rate"`     // moderate or sparse (open); clients=N (closed)
	RatePerS float64 `json:"rate_per_s,omitempty"`
	Run      string  `json:"run"` // ferry, plain, limit1, limit2, limit4, limit8
	SavedPct float64 `json:"saved_pct"`
	// SavedVsMeasuredPct is against plain Lambda as measured in the same
	// trial (which pays its own rounding and overhead).
	SavedVsMeasuredPct float64 `json:"saved_vs_measured_pct"`
	// ContendedPct is the share of the billed time the sandboxes waited
	// for a core their vCPU entitled them to while other sandboxes had
	// this small machine's cores: time a Lambda sandbox, with its own
	// vCPU, does not wait. PlainUncontendedPct, on plain rows only, is
	// SavedPct with that time taken out of what was billed: plain
	// Lambda's own overhead against its ideal. (Not on ferry's rows: a
	// wait inside an invocation that carries many requests need not
	// lengthen it, so taking it out would flatter ferry.)
	ContendedPct        float64  `json:"contended_pct"`
	PlainUncontendedPct *float64 `json:"plain_uncontended_pct,omitempty"`
	P50Ratio            float64  `json:"p50_ratio"`
	P99Ratio            float64  `json:"p99_ratio"`
	P50Ms               float64  `json:"p50_ms"`
	P99Ms               float64  `json:"p99_ms"`
	// IOP50Ratio and IOP99Ratio are the mix's I/O requests alone.
	IOP50Ratio       float64 `json:"io_p50_ratio,omitempty"`
	IOP99Ratio       float64 `json:"io_p99_ratio,omitempty"`
	PhysicalLimitPct float64 `json:"physical_limit_pct"`
	OraclePct        float64 `json:"oracle_pct"`
	OracleRatio      float64 `json:"oracle_ratio"`
	// OracleCurve is the oracle's saving at a CPU wait of 0, 5, 10, 25 ms.
	OracleCurve map[string]float64 `json:"oracle_curve,omitempty"`
	Requests    int                `json:"requests"`
	Errors      int                `json:"errors"`
	Invocations int                `json:"invocations"`
	BilledMs    int64              `json:"billed_ms"`
	Sandboxes   int                `json:"sandboxes"`
}

// combo is one workload at one memory size and rate, and the runs it gets.
type combo struct {
	w      workload
	mem    int
	rate   string
	runs   []string
	trials int
	runFor time.Duration
}

var oracleQs = []float64{0, 5, 10, 25}

func savedCombos(o options) []combo {
	trials, moderate, sparse := 3, 12*time.Second, 20*time.Second
	if o.short {
		trials, moderate, sparse = 1, 6*time.Second, 10*time.Second
	}
	var out []combo
	for _, w := range savedWorkloads {
		if o.workloads != nil && !o.workloads[w.name] {
			continue
		}
		runs := []string{"ferry", "plain", "limit1"}
		if w.name == "seed" {
			runs = append(runs, "limit2", "limit4", "limit8")
		}
		out = append(out, combo{w, 1769, "moderate", runs, trials, moderate})
		out = append(out, combo{w, 1769, "sparse", []string{"ferry", "plain"}, trials, sparse})
		if w.name == "api" || w.name == "cpu-bound" {
			for _, rate := range []string{"moderate", "sparse"} {
				d := moderate
				if rate == "sparse" {
					d = sparse
				}
				out = append(out, combo{w, 512, rate, []string{"ferry", "plain"}, trials, d})
			}
		}
	}
	return out
}

// start starts a local stack for section; with bench -logs DIR, its
// router logs at debug level and keeps its logs (keepLogs). stop stops it.
func (o options) start(ctx context.Context, lc localrun.Config, section string) (st *localrun.Stack, stop func(), err error) {
	if o.logs != "" {
		lc.RouterEnv = append(lc.RouterEnv, "FERRY_ROUTER_LOG_LEVEL=debug")
	}
	closeLogs, err := o.keepLogs(&lc, section)
	if err != nil {
		return nil, nil, err
	}
	if st, err = localrun.Start(ctx, lc); err != nil {
		closeLogs()
		return nil, nil, err
	}
	return st, func() { st.Stop(); closeLogs() }, nil
}

// keepLogs, with bench -logs DIR, sends the stack's emulator and router
// output to DIR/<section>-emulator.log and DIR/<section>-router.log; the
// returned function closes them.
func (o options) keepLogs(lc *localrun.Config, section string) (func(), error) {
	if o.logs == "" {
		return func() {}, nil
	}
	emu, err := os.Create(filepath.Join(o.logs, section+"-emulator.log"))
	if err != nil {
		return nil, err
	}
	router, err := os.Create(filepath.Join(o.logs, section+"-router.log"))
	if err != nil {
		emu.Close()
		return nil, err
	}
	lc.Log, lc.RouterLog = emu, router
	return func() { emu.Close(); router.Close() }, nil
}

// fnName is the emulator function a run uses at mem.
func fnName(run string, mem int) string { return fmt.Sprintf("%s-%d", run, mem) }

// savedSection: ferry, limit 1 through the router, and plain Lambda, side by
// side on the same emulator, app and Poisson arrivals; each against ideal
// plain Lambda and the trace oracle.
func savedSection(ctx context.Context, o options) (*table, error) {
	combos := savedCombos(o)
	var fns []localrun.Function
	seen := map[string]bool{}
	for _, c := range combos {
		for _, run := range c.runs {
			name := fnName(run, c.mem)
			if seen[name] {
				continue
			}
			seen[name] = true
			f := localrun.Function{Name: name, MemoryMB: c.mem, Concurrency: 300}
			if n, ok := strings.CutPrefix(run, "limit"); ok {
				fmt.Sscan(n, &f.Limit)
				f.Env = blindEnv
			}
			if run == "ferry" {
				f.Env = o.savedEnv
			}
			fns = append(fns, f)
		}
	}
	st, stop, err := o.start(ctx, localrun.Config{Dist: o.dist, Functions: fns}, "saved")
	if err != nil {
		return nil, err
	}
	defer stop()

	t := &table{
		title:   "1. Compute saved: ferry against plain Lambda (one invocation per request), open loop",
		command: "go run ./bench -dist dist/bench -only saved [-workloads api,seed]",
		header: []string{"workload", "MB", "rate", "run", "saved", "vs measured", "machine wait", "plain without it", "oracle@10ms", "of oracle",
			"p50", "p99", "p50 ratio", "p99 ratio", "invocations", "requests", "errors"},
	}
	curves := &table{
		title:  "1b. The oracle: least billed time at a CPU wait of Q, on each run's own arrivals",
		header: []string{"workload", "MB", "rate", "requests/s", "physical limit", "Q=0", "Q=5ms", "Q=10ms", "Q=25ms"},
	}
	for _, c := range combos {
		rows, err := runCombo(ctx, st, c)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			o.results.Saved = append(o.results.Saved, r)
			label := ""
			if r.Run == c.runs[0] {
				label = c.w.label()
			}
			saved, vsMeasured, ofOracle := percent(r.SavedPct), percent(r.SavedVsMeasuredPct), fmt.Sprintf("%.2f", r.OracleRatio)
			p50r, p99r := fmt.Sprintf("%.2fx", r.P50Ratio), fmt.Sprintf("%.2fx", r.P99Ratio)
			if r.IOP50Ratio > 0 {
				p50r += fmt.Sprintf(" (I/O %.2fx)", r.IOP50Ratio)
				p99r += fmt.Sprintf(" (I/O %.2fx)", r.IOP99Ratio)
			}
			plainWithout := ""
			if r.Run == "plain" {
				vsMeasured, ofOracle, p50r, p99r = "", "", "", ""
				if r.PlainUncontendedPct != nil {
					plainWithout = percent(*r.PlainUncontendedPct)
				}
			}
			t.add(label, r.MemoryMB, fmt.Sprintf("%s %.1f/s", r.Rate, r.RatePerS), r.Run, saved, vsMeasured,
				percent(r.ContendedPct), plainWithout, percent(r.OraclePct), ofOracle, msDur(r.P50Ms), msDur(r.P99Ms), p50r, p99r, r.Invocations, r.Requests, r.Errors)
		}
		r0 := rows[0]
		curves.add(c.w.label(), c.mem, c.rate, fmt.Sprintf("%.1f", r0.RatePerS), percent(r0.PhysicalLimitPct),
			percent(r0.OracleCurve["0"]), percent(r0.OracleCurve["5"]), percent(r0.OracleCurve["10"]), percent(r0.OracleCurve["25"]))
	}
	trials := combos[0].trials
	t.notes = append(t.notes,
		fmt.Sprintf("Poisson arrivals, open loop: latency from each request's scheduled send time. Median of %d trials; every run of a trial replays the same arrivals, one run after another.", trials),
		"saved: 1 - billed / ideal plain Lambda, where ideal plain bills each request its CPU at the function's vCPU plus its wait (what Lambda bills on an uncontended vCPU). vs measured: against plain Lambda as run here (one Invoke per request with a Function URL event).",
		"machine wait: the share of the billed time the sandboxes waited for a core their vCPU entitled them to, because other sandboxes had this machine's cores (estimated from their cgroups and threads' run-queue waits, erring low: see cgroup.Sample.ContendedSince). Lambda gives each sandbox its own vCPU, so it has no such wait. Every run pays it. plain without it: plain Lambda's saving with that time taken out, which leaves its own per-invocation overhead; not given for ferry's runs, where a wait inside an invocation that carries many requests need not lengthen it.",
		"oracle@10ms: what the least-billed placement of the same arrivals saves if a request's CPU may wait 10 ms in all (no overhead, no linger); of oracle = saved / oracle@10ms. p50/p99 ratios: against plain Lambda measured in the same trial.",
		"runs: ferry (defaults: adaptive admission); plain (one invocation per request); limitN (the router's and bootstrap's limit N, CPU admission off: CPU-blind packing).",
		fmt.Sprintf("Sandboxes get memory/1769 vCPU and their memory from the kernel (cgroups); moderate rates put about 0.8 cores of CPU demand on this %s. ferry's extra environment: %v (-saved-env).", machineCores(), o.savedEnv))
	curves.notes = append(curves.notes, "physical limit: the saving if billed time were only CPU time. The curve shows what latency buys; the oracle knows every request in advance, which no scheduler does.")
	t.extra = append(t.extra, curves)
	return t, nil
}

// runCombo runs a combo's trials and returns one row per run, medians.
func runCombo(ctx context.Context, st *localrun.Stack, c combo) ([]savedRow, error) {
	vcpu := min(float64(c.mem)/1769, 6)
	rate := c.w.rate(c.rate)
	type trial struct {
		billed, contended, p50, p99, ioP50, ioP99, requests, errors, invocations, sandboxes float64
	}
	per := map[string][]trial{}
	var oracle = map[float64][]float64{}
	var ideal, physical []float64
	paths := make([]string, len(c.w.kinds))
	for i, k := range c.w.kinds {
		paths[i] = k.path()
	}
	// Warm each run's sandboxes first, off the books: a cold start is not
	// what this section measures.
	warm := poisson(1, rate, 2*time.Second, c.w.weights)
	for _, run := range c.runs {
		if _, err := measure(ctx, st, run, c.mem, warm, paths); err != nil {
			return nil, err
		}
	}
	for tr := range c.trials {
		s := poisson(seedOf(c, tr), rate, c.runFor, c.w.weights)
		// The oracle and ideal plain Lambda, from the trace itself.
		reqs, id, cpu := traceCosts(c.w, s, vcpu)
		ideal = append(ideal, id)
		physical = append(physical, 100*(1-cpu/id))
		for _, q := range oracleQs {
			oracle[q] = append(oracle[q], 100*(1-oracleBilled(reqs, vcpu, q)/id))
		}
		for _, run := range c.runs {
			m, err := measure(ctx, st, run, c.mem, s, paths)
			if err != nil {
				return nil, err
			}
			all := m.res.latencies(s, -1)
			tt := trial{billed: float64(m.billed), contended: ms(m.contended), p50: ms(quantile.Of(all, 0.5)), p99: ms(quantile.Of(all, 0.99)),
				requests: float64(len(s.at)), errors: float64(m.res.failed), invocations: float64(m.invocations), sandboxes: float64(m.sandboxes)}
			if len(c.w.kinds) > 1 {
				io := m.res.latencies(s, 0)
				tt.ioP50, tt.ioP99 = ms(quantile.Of(io, 0.5)), ms(quantile.Of(io, 0.99))
			}
			per[run] = append(per[run], tt)
			if m.res.failed > 0 {
				fmt.Printf("  %s %d MB %s %s trial %d: %d of %d failed, first: %s\n", c.w.name, c.mem, c.rate, run, tr+1, m.res.failed, len(s.at), m.res.first)
			}
		}
	}
	curve := map[string]float64{}
	for _, q := range oracleQs {
		curve[fmt.Sprint(q)] = median(oracle[q])
	}
	var rows []savedRow
	plain := per["plain"]
	for _, run := range c.runs {
		ts := per[run]
		var saved, vsMeasured, p50r, p99r, ioP50r, ioP99r, of, contended, uncontended []float64
		for i, tt := range ts {
			sv := 100 * (1 - tt.billed/ideal[i])
			saved = append(saved, sv)
			contended = append(contended, 100*tt.contended/tt.billed)
			uncontended = append(uncontended, 100*(1-(tt.billed-tt.contended)/ideal[i]))
			vsMeasured = append(vsMeasured, 100*(1-tt.billed/plain[i].billed))
			p50r = append(p50r, tt.p50/plain[i].p50)
			p99r = append(p99r, tt.p99/plain[i].p99)
			if tt.ioP50 > 0 {
				ioP50r = append(ioP50r, tt.ioP50/plain[i].ioP50)
				ioP99r = append(ioP99r, tt.ioP99/plain[i].ioP99)
			}
			of = append(of, sv/oracle[10][i])
		}
		col := func(f func(trial) float64) float64 {
			var v []float64
			for _, tt := range ts {
				v = append(v, f(tt))
			}
			return median(v)
		}
		rows = append(rows, savedRow{
			Workload: c.w.name, MemoryMB: c.mem, Arrivals: "open", Rate: c.rate, RatePerS: round(rate, 1), Run: run,
			SavedPct: round(median(saved), 1), SavedVsMeasuredPct: round(median(vsMeasured), 1),
			ContendedPct: round(median(contended), 1),
			P50Ratio:     round(median(p50r), 3), P99Ratio: round(median(p99r), 3),
			P50Ms: round(col(func(t trial) float64 { return t.p50 }), 1), P99Ms: round(col(func(t trial) float64 { return t.p99 }), 1),
			IOP50Ratio: round(median(ioP50r), 3), IOP99Ratio: round(median(ioP99r), 3),
			PhysicalLimitPct: round(median(physical), 1), OraclePct: round(curve["10"], 1), OracleRatio: round(median(of), 2),
			OracleCurve: curve,
			Requests:    int(col(func(t trial) float64 { return t.requests })), Errors: int(col(func(t trial) float64 { return t.errors })),
			Invocations: int(col(func(t trial) float64 { return t.invocations })), BilledMs: int64(col(func(t trial) float64 { return t.billed })),
			Sandboxes: int(col(func(t trial) float64 { return t.sandboxes })),
		})
		if run == "plain" {
			v := round(median(uncontended), 1)
			rows[len(rows)-1].PlainUncontendedPct = &v
		}
	}
	return rows, nil
}

// traceCosts turns trace s of workload w into the oracle's requests, and
// adds up what ideal plain Lambda bills for it and its CPU time alone, in
// ms, at vcpu.
func traceCosts(w workload, s schedule, vcpu float64) (reqs []oracleRequest, ideal, cpu float64) {
	for i, at := range s.at {
		k := w.kinds[s.kinds[i]]
		reqs = append(reqs, oracleRequest{float64(at) / float64(time.Millisecond), k.phases})
		ideal += nominal(k.phases, vcpu)
		cpu += k.cpuMs() / min(1, vcpu)
	}
	return reqs, ideal, cpu
}

// measured is one run of a trace against one function.
type measured struct {
	res                    openResult
	billed                 int64
	contended              time.Duration // of billed: this machine's contention (lambdaemu.Stats.ContendedUs)
	invocations, sandboxes int64
}

// measure sends s to run's function at mem, through the router or, for
// plain, straight to the emulator's Invoke API, and reads what the
// emulator billed once every invocation has ended.
func measure(ctx context.Context, st *localrun.Stack, run string, mem int, s schedule, paths []string) (measured, error) {
	fn := fnName(run, mem)
	before, err := st.Stats(ctx, fn)
	if err != nil {
		return measured{}, err
	}
	path := func(i int) string { return paths[s.kinds[i]] }
	var m measured
	if run == "plain" {
		m.res = openLoop(ctx, s, viaInvoke(st.Emulator, fn, path), invokeOK)
	} else {
		m.res = openLoop(ctx, s, viaRouter(st.Ingress, fn, path), routerOK)
	}
	if err := st.Quiesce(ctx, fn); err != nil {
		return measured{}, err
	}
	after, err := st.Stats(ctx, fn)
	if err != nil {
		return measured{}, err
	}
	m.billed = after.BilledMs - before.BilledMs
	m.contended = time.Duration(after.ContendedUs-before.ContendedUs) * time.Microsecond
	m.invocations = after.Invocations - before.Invocations
	m.sandboxes = after.SandboxesStarted - before.SandboxesStarted
	return m, nil
}

func seedOf(c combo, trial int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d/%s/%d", c.w.name, c.mem, c.rate, trial)
	return h.Sum64()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msDur(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func round(v float64, places int) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	p := math.Pow(10, float64(places))
	if r := math.Round(v*p) / p; r != 0 {
		return r
	}
	return 0 // not -0
}
