// Command demo is `make demo`: ferry's main job on one machine. It starts
// the Lambda emulator (the real bootstrap + the Go sample app as two
// functions) and ferry-router, then drives the same closed-loop load at two
// routes in turn: one with ferry's per-instance limit, one with limit 1
// (what Lambda does today). It prints one table and stops everything.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
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
	work, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	layer, code := filepath.Join(work, "layer"), filepath.Join(work, "code")
	for _, d := range []string{layer, code} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Symlink(filepath.Join(dist, "bootstrap"), filepath.Join(layer, "bootstrap")); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Join(dist, "goapp"), filepath.Join(code, "goapp")); err != nil {
		return err
	}

	fn := func(name string) map[string]any {
		return map[string]any{"name": name, "code_dir": code, "layers": []string{layer}, "runtime": "provided.al2023",
			"timeout": "60s", "memory_mb": 1769, "concurrency": 200,
			"env": map[string]string{"FERRY_APP_CMD": filepath.Join(code, "goapp"), "FERRY_READINESS_PATH": "/healthz"}}
	}
	emuCfg := filepath.Join(work, "functions.json")
	writeJSON(emuCfg, map[string]any{"functions": []any{fn("ferry"), fn("single")}})
	routes := filepath.Join(work, "routes.json")
	writeJSON(routes, map[string]any{"routes": []map[string]any{
		{"function": "ferry", "host": "ferry.localhost", "max_concurrency": o.limit},
		{"function": "single", "host": "single.localhost", "max_concurrency": 1},
	}})

	emuAddr, ingress, admin := freeAddr(), freeAddr(), freeAddr()
	logs, err := os.Create(filepath.Join(work, "processes.log"))
	if err != nil {
		return err
	}
	defer logs.Close()
	procs := &processes{}
	defer procs.stop()
	fmt.Fprintf(out, "starting the Lambda emulator on %s and ferry-router on %s\n", emuAddr, ingress)
	if err := procs.start(logs, nil, filepath.Join(dist, "lambda-emulator"), "-config", emuCfg, "-listen", emuAddr); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+emuAddr+"/_emulator/health"); err != nil {
		return err
	}
	routerEnv := []string{"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=demo", "AWS_SECRET_ACCESS_KEY=demo",
		"AWS_ENDPOINT_URL_LAMBDA=http://" + emuAddr, "FERRY_ROUTER_CONFIG=" + routes,
		"FERRY_ROUTER_LISTEN=" + ingress, "FERRY_ROUTER_ADMIN_LISTEN=" + admin, "FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0",
		"FERRY_ROUTER_METRICS_INTERVAL=10s"}
	if err := procs.start(io.Discard, routerEnv, filepath.Join(dist, "ferry-router")); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+admin+"/readyz"); err != nil {
		return err
	}

	var rows []result
	for _, r := range []struct {
		name, host string
		limit      int
	}{{"ferry", "ferry.localhost", o.limit}, {"single", "single.localhost", 1}} {
		fmt.Fprintf(out, "\n%s (limit %d): %d clients x %v of GET %s\n", r.name, r.limit, o.concurrency, o.duration, o.path)
		row, err := drive(ctx, out, "http://"+ingress, r.host, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  waiting for %s's invocations to end...\n", r.name)
		if err := quiesce(ctx, "http://"+admin, r.name); err != nil {
			return err
		}
		st, err := emulatorStats(ctx, "http://"+emuAddr, r.name)
		if err != nil {
			return err
		}
		row.name, row.limit = r.name, r.limit
		row.invocations, row.sandboxes, row.billedMs = st.Invocations, st.SandboxesStarted, st.BilledMs
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

type emuStats struct {
	Invocations      int64 `json:"invocations"`
	SandboxesStarted int64 `json:"sandboxes_started"`
	BilledMs         int64 `json:"billed_ms"`
}

func emulatorStats(ctx context.Context, base, fn string) (emuStats, error) {
	var all map[string]emuStats
	if err := getJSON(ctx, base+"/_emulator/stats", &all); err != nil {
		return emuStats{}, err
	}
	return all[fn], nil
}

// quiesce waits until fn has no live or starting instance.
func quiesce(ctx context.Context, admin, fn string) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		var pools []struct {
			Function  string `json:"function"`
			Instances []any  `json:"instances"`
			Pending   int    `json:"pending_invocations"`
		}
		if err := getJSON(ctx, admin+"/pool", &pools); err != nil {
			return err
		}
		idle := true
		for _, p := range pools {
			if p.Function == fn && (len(p.Instances) > 0 || p.Pending > 0) {
				idle = false
			}
		}
		if idle {
			time.Sleep(200 * time.Millisecond) // the last invoke answer reaches the emulator's totals
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s's invocations did not end", fn)
}

func getJSON(ctx context.Context, url string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func waitHTTP(ctx context.Context, url string) error {
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer", url)
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeJSON(path string, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	os.WriteFile(path, b, 0o644)
}

// processes are the children the demo started; stop ends them all.
type processes struct{ cmds []*exec.Cmd }

func (p *processes) start(logs io.Writer, env []string, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", filepath.Base(bin), err)
	}
	p.cmds = append(p.cmds, cmd)
	return nil
}

func (p *processes) stop() {
	for _, c := range slices.Backward(p.cmds) {
		c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
}
