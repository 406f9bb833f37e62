// Command bench is `make bench`: what ferry saves and what it costs,
// measured side by side in one run on this machine, written as tables to
// stdout and to bench/RESULTS.md.
//
//	bench -dist dist/bench [-short] [-only saved,overhead,cold,burst,scale,profile] [-out bench/RESULTS.md]
//
// Every figure is a median of repeated trials, compared within the same
// run. Nothing here passes or fails on speed: it prints what it measured.
package main

import (
	"context"
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
	dist, out string
	short     bool
	only      map[string]bool
	savedEnv  map[string]string // extra bootstrap environment in section 1
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
}

func main() {
	var o options
	var only, savedEnv string
	flag.StringVar(&o.dist, "dist", "dist/bench", "directory with bootstrap, goapp, lambda-emulator and ferry-router")
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "results file (Markdown); empty for none")
	flag.BoolVar(&o.short, "short", false, "fewer and shorter trials (about 3 minutes)")
	flag.StringVar(&only, "only", "", "comma-separated sections to run (default all): "+names())
	flag.StringVar(&savedEnv, "saved-env", "", "K=V,... added to the ferry functions' environment in section saved (try FERRY_CPU_GUARD=0.97)")
	flag.Parse()
	for kv := range strings.SplitSeq(savedEnv, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
			if o.savedEnv == nil {
				o.savedEnv = map[string]string{}
			}
			o.savedEnv[k] = v
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
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
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
	for _, bin := range []string{"bootstrap", "goapp", "lambda-emulator", "ferry-router"} {
		if _, err := os.Stat(filepath.Join(o.dist, bin)); err != nil {
			return fmt.Errorf("%v: build the binaries first (make bench does)", err)
		}
	}
	started := time.Now()
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

func machineFacts(o options) string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mode := "full"
	if o.short {
		mode = "short"
	}
	return fmt.Sprintf("machine: %d cores (%s), %s/%s, %s; run %s, mode %s",
		runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version(),
		time.Now().UTC().Format("2006-01-02 15:04 MST"), mode)
}
