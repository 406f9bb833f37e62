// Command bench is `make bench`: what ferry saves and what it costs,
// measured side by side in one run on this machine, written as tables to
// stdout and to bench/RESULTS.md.
//
//	bench -dist dist/bench [-short] [-only saved,overhead,cold,burst,scale,profile,replicas]
//	      [-workloads api,seed,...] [-out bench/RESULTS.md] [-json bench/results.json]
//
// Every figure is a median of repeated trials, compared within the same
// run. Nothing here passes or fails on speed: it prints what it measured,
// as tables (RESULTS.md) and for programs (results.json).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type options struct {
	dist, out, json string
	short           bool
	only            map[string]bool
	workloads       map[string]bool   // section saved's workloads; nil for all
	savedEnv        map[string]string // extra bootstrap environment of ferry's functions in section saved
	logs            string            // directory for section saved's router and emulator logs; "" for none
	results         *results
}

// results is results.json: the machine, then each section's figures.
type results struct {
	Machine  machine         `json:"machine"`
	Saved    []savedRow      `json:"saved"`
	Replicas *replicasResult `json:"replicas,omitempty"`
}

type machine struct {
	Cores    int    `json:"cores"`
	CPU      string `json:"cpu"`
	OS       string `json:"os"`
	Go       string `json:"go"`
	Run      string `json:"run"`
	Mode     string `json:"mode"`
	Limited  bool   `json:"sandboxes_limited"` // sandboxes held to their vCPU and memory by cgroups
	TookSecs int    `json:"took_s"`
}

// section is one part of the suite.
type section struct {
	name string
	run  func(ctx context.Context, o options) (*table, error)
}

var sections = []section{
	{"saved", savedSection},
	{"overhead", overheadSection},
	{"cold", coldSection},
	{"burst", burstSection},
	{"scale", scaleSection},
	{"profile", profileSection},
	{"replicas", replicasSection},
}

func main() {
	var o options
	var only, savedEnv string
	flag.StringVar(&o.dist, "dist", "dist/bench", "directory with bootstrap, goapp, lambda-emulator and ferry-router")
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "results file (Markdown); empty for none")
	flag.StringVar(&o.json, "json", "bench/results.json", "results for programs (JSON; with -only, the other sections' figures already there are kept); empty for none")
	var wl string
	flag.StringVar(&wl, "workloads", "", "comma-separated workloads of section saved (default all): "+workloadNames())
	flag.BoolVar(&o.short, "short", false, "fewer and shorter trials (about 3 minutes)")
	flag.StringVar(&only, "only", "", "comma-separated sections to run (default all): "+names())
	var demo time.Duration
	flag.DurationVar(&demo, "demo", 0, "make demo instead of the suite: the api and seed workloads for this long each, ferry against plain Lambda, printed only")
	var soak time.Duration
	flag.DurationVar(&soak, "soak", 0, "make soak instead of the suite: steady mixed load for this long, the router's memory, goroutines and descriptors a row a minute")
	flag.StringVar(&savedEnv, "saved-env", "", "K=V,... added to the ferry functions' environment in section saved (try FERRY_CPU_BUDGET=0.1)")
	flag.StringVar(&o.logs, "logs", "", "directory to keep section saved's router (debug) and emulator logs in, to see why an invocation started or ended")
	flag.Parse()
	for kv := range strings.SplitSeq(savedEnv, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
			if o.savedEnv == nil {
				o.savedEnv = map[string]string{}
			}
			o.savedEnv[k] = v
		}
	}
	if wl != "" {
		o.workloads = map[string]bool{}
		for _, w := range strings.Split(wl, ",") {
			w = strings.TrimSpace(w)
			if _, ok := workloadByName(w); !ok {
				fmt.Fprintf(os.Stderr, "bench: -workloads: no workload %q (have %s)\n", w, workloadNames())
				os.Exit(2)
			}
			o.workloads[w] = true
		}
	}
	if only != "" {
		o.only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			o.only[strings.TrimSpace(s)] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// make soak and make demo instead of the suite.
	for _, m := range []struct {
		name string
		d    time.Duration
		run  func(context.Context, options, time.Duration, io.Writer) error
	}{{"soak", soak, runSoak}, {"demo", demo, runDemo}} {
		if m.d <= 0 {
			continue
		}
		err := checkDist(o.dist)
		if err == nil {
			err = m.run(ctx, o, m.d, os.Stdout)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, m.name+":", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func workloadNames() string {
	var n []string
	for _, w := range savedWorkloads {
		n = append(n, w.name)
	}
	return strings.Join(n, ",")
}

func names() string {
	var n []string
	for _, s := range sections {
		n = append(n, s.name)
	}
	return strings.Join(n, ",")
}

func run(ctx context.Context, o options, out io.Writer) error {
	for name := range o.only {
		if !strings.Contains(","+names()+",", ","+name+",") {
			return fmt.Errorf("-only: no section %q (have %s)", name, names())
		}
	}
	if err := checkDist(o.dist); err != nil {
		return err
	}
	started := time.Now()
	o.results = &results{Machine: machineOf(o)}
	if o.only != nil && o.json != "" {
		// A run of some sections keeps the other sections' figures.
		if b, err := os.ReadFile(o.json); err == nil {
			var kept results
			if json.Unmarshal(b, &kept) == nil {
				if !o.only["saved"] && kept.Machine.Run != "" {
					o.results.Machine = kept.Machine // the run the saved rows are from
				}
				if !o.only["saved"] {
					o.results.Saved = kept.Saved
				}
				if !o.only["replicas"] {
					o.results.Replicas = kept.Replicas
				}
			}
		}
	}
	facts := machineFacts(o)
	fmt.Fprintln(out, facts)
	var tables []*table
	for _, s := range sections {
		if o.only != nil && !o.only[s.name] {
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(out, "\n== %s ...\n", s.name)
		t, err := s.run(ctx, o)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// One section failing is reported, not fatal: the rest still
			// measure.
			t = &table{title: s.name, notes: []string{"FAILED: " + err.Error()}}
		}
		t.took = time.Since(t0)
		t.print(out)
		tables = append(tables, t)
	}
	total := time.Since(started)
	fmt.Fprintf(out, "\nbench: %d sections in %v\n", len(tables), total.Round(time.Second))
	if o.json != "" {
		if o.only == nil || o.only["saved"] {
			o.results.Machine.TookSecs = int(total.Seconds())
		}
		b, err := json.MarshalIndent(o.results, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.json, append(b, '\n'), 0o644); err != nil {
			return errors.Join(errors.New("writing results"), err)
		}
		fmt.Fprintf(out, "bench: wrote %s\n", o.json)
	}
	if o.out == "" {
		return nil
	}
	var md strings.Builder
	md.WriteString("# ferry benchmark results\n\nWritten by `make bench")
	if o.short {
		md.WriteString(" BENCH_FLAGS=-short")
	}
	md.WriteString("` (`go run ./bench`); do not edit by hand.\n\n")
	md.WriteString("```\n" + facts + "\n```\n")
	for _, t := range tables {
		t.markdown(&md)
	}
	fmt.Fprintf(&md, "\nWhole suite: %v.\n", total.Round(time.Second))
	if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
		return errors.Join(errors.New("writing results"), err)
	}
	fmt.Fprintf(out, "bench: wrote %s\n", o.out)
	return nil
}

func machineOf(o options) machine {
	mode := "full"
	if o.short {
		mode = "short"
	}
	return machine{Cores: runtime.NumCPU(), CPU: cpuModel(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(),
		Run: time.Now().UTC().Format(time.RFC3339), Mode: mode, Limited: os.Geteuid() == 0 && runtime.GOOS == "linux"}
}

func machineCores() string { return fmt.Sprintf("%d-core machine", runtime.NumCPU()) }

func cpuModel() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return model
}

func machineFacts(o options) string {
	model := cpuModel()
	mode := "full"
	if o.short {
		mode = "short"
	}
	return fmt.Sprintf("machine: %d cores (%s), %s/%s, %s; run %s, mode %s",
		runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version(),
		time.Now().UTC().Format("2006-01-02 15:04 MST"), mode)
}

// checkDist reports a missing binary of those the local stack runs.
func checkDist(dist string) error {
	for _, bin := range []string{"bootstrap", "goapp", "lambda-emulator", "ferry-router"} {
		if _, err := os.Stat(filepath.Join(dist, bin)); err != nil {
			return fmt.Errorf("%v: build the binaries first (make bench and make demo do)", err)
		}
	}
	return nil
}
