package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/load"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
	"github.com/ferryrun/ferry/localstack/localrun"
	"github.com/ferryrun/ferry/router/pool"
)

// bins holds the real binaries every test runs as processes.
var bins struct {
	dir, router, emulator, layer, code string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "router-test-")
	if err != nil {
		panic(err)
	}
	bins.dir = dir
	bins.layer, bins.code = filepath.Join(dir, "layer"), filepath.Join(dir, "code")
	os.MkdirAll(bins.layer, 0o755)
	os.MkdirAll(bins.code, 0o755)
	var out []string
	out, err = testbin.Build(dir, "./router", "./localstack/cmd/lambda-emulator")
	if err == nil {
		bins.router, bins.emulator = out[0], out[1]
		_, err = testbin.Build(bins.layer, "./bootstrap")
	}
	if err == nil {
		_, err = testbin.Build(bins.code, "./examples/goapp")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if races := testbin.RaceReports(dir); races != "" {
		fmt.Fprintf(os.Stderr, "the race-built router, emulator or bootstrap found data races:\n%s", races)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := localrun.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// stack is one emulator and one router, as processes, stopped by the test.
type stack struct {
	t         *testing.T
	ingress   string // http://host:port
	admin     string
	emulator  string
	routerOut *testbin.Buffer // stdout: EMF lines
	routerLog *testbin.Buffer
	router    *exec.Cmd
	routerCmd []string          // how the router is started (restartRouter starts it again so)
	fnEnv     map[string]string // the function's environment, as the test set it
	routerEnv []string
}

// stackOpts shape the function and the router.
type stackOpts struct {
	timeout     time.Duration
	concurrency int               // the function's concurrency limit
	fnEnv       map[string]string // the function's environment
	routerEnv   map[string]string
	memoryMB    int // if zero, 1024
	nofile      int // if set, the router's limit on open files
}

func startStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 30 * time.Second
	}
	if o.concurrency == 0 {
		o.concurrency = 50
	}
	if o.memoryMB == 0 {
		o.memoryMB = 1024
	}
	env := map[string]string{"FERRY_APP_CMD": filepath.Join(bins.code, "goapp"), "FERRY_READINESS_PATH": "/healthz"}
	for _, kv := range testbin.RaceLog(bins.dir) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range o.fnEnv {
		env[k] = v
	}
	cfg, _ := json.Marshal(lambdaemu.Config{Functions: []lambdaemu.Function{{
		Name: "app", CodeDir: bins.code, Layers: []string{bins.layer}, Runtime: "provided.al2023",
		Timeout: lambdaemu.Duration{Duration: o.timeout}, MemoryMB: o.memoryMB, Concurrency: o.concurrency, Env: env,
	}}})
	cfgPath := filepath.Join(t.TempDir(), "functions.json")
	os.WriteFile(cfgPath, cfg, 0o644)

	s := &stack{t: t, routerOut: &testbin.Buffer{}, routerLog: &testbin.Buffer{}, fnEnv: o.fnEnv}
	emuAddr := freeAddr(t)
	s.emulator = "http://" + emuAddr
	emu := exec.Command(bins.emulator, "-config", cfgPath, "-listen", emuAddr)
	emu.Env = append(os.Environ(), testbin.RaceLog(bins.dir)...)
	emuLog := &testbin.Buffer{}
	emu.Stdout, emu.Stderr = emuLog, emuLog
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		emu.Process.Signal(syscall.SIGTERM)
		emu.Wait()
		if t.Failed() {
			t.Logf("emulator log (tail):\n%s", tail(emuLog.String(), 3000))
		}
	})
	waitHTTP(t, s.emulator+"/_emulator/health")

	ingress, admin := freeAddr(t), freeAddr(t)
	s.ingress, s.admin = "http://"+ingress, "http://"+admin
	s.routerCmd = []string{bins.router}
	if o.nofile > 0 {
		s.routerCmd = []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", o.nofile, o.nofile), "--", bins.router}
	}
	s.routerEnv = append(os.Environ(),
		"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_ENDPOINT_URL_LAMBDA="+s.emulator,
		"FERRY_ROUTER_ROUTES=app=/", "FERRY_ROUTER_LISTEN="+ingress, "FERRY_ROUTER_ADMIN_LISTEN="+admin,
		"FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0", "FERRY_ROUTER_METRICS_INTERVAL=1s", "FERRY_ROUTER_SHUTDOWN_TIMEOUT=5s")
	s.routerEnv = append(s.routerEnv, testbin.RaceLog(bins.dir)...)
	for k, v := range o.routerEnv {
		s.routerEnv = append(s.routerEnv, k+"="+v)
	}
	if err := s.startRouter(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.router.Process.Signal(syscall.SIGTERM)
		s.router.Wait() // an error if a test already waited: fine
		if t.Failed() {
			t.Logf("router log (tail):\n%s", tail(s.routerLog.String(), 3000))
		}
	})
	waitHTTP(t, s.admin+"/readyz")
	return s
}

// startRouter starts the router process as the stack was set up to.
func (s *stack) startRouter() error {
	s.router = exec.Command(s.routerCmd[0], s.routerCmd[1:]...)
	s.router.Env = s.routerEnv
	s.router.Stdout, s.router.Stderr = s.routerOut, s.routerLog
	return s.router.Start()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	t.Fatalf("%s never answered", url)
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}, Timeout: 60 * time.Second}

type reply struct {
	status  int
	body    string
	header  http.Header
	trailer http.Header
	err     error
}

func (s *stack) do(method, path string, body io.Reader, hdr http.Header) reply {
	req, _ := http.NewRequest(method, s.ingress+path, body)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return reply{status: resp.StatusCode, body: string(b), header: resp.Header, trailer: resp.Trailer, err: err}
}

func (s *stack) get(path string) reply { return s.do("GET", path, nil, nil) }

func (s *stack) stats() lambdaemu.Stats {
	s.t.Helper()
	var out map[string]lambdaemu.Stats
	resp, err := http.Get(s.emulator + "/_emulator/stats")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&out)
	return out["app"]
}

func (s *stack) pool() pool.State {
	s.t.Helper()
	var out []pool.State
	resp, err := http.Get(s.admin + "/pool")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&out)
	if len(out) != 1 {
		s.t.Fatalf("pool state %+v", out)
	}
	return out[0]
}

// quiesce waits until the function has no live instance and no pending
// invocation, so emulator totals are final.
func (s *stack) quiesce() {
	s.t.Helper()
	for deadline := time.Now().Add(40 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		// And every invocation's end is in the emulator's totals.
		if p := s.pool(); len(p.Instances) == 0 && p.Pending == 0 && s.stats().Running == 0 {
			return
		}
	}
	s.t.Fatal("instances never ended")
}

// awaitNoStreams reports whether the pool's instances hold no stream
// within d.
func (s *stack) awaitNoStreams(d time.Duration) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		busy := 0
		for _, in := range s.pool().Instances {
			busy += in.InFlight
		}
		if busy == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// emfSum adds up metric name over the router's EMF lines.
func (s *stack) emfSum(name string) float64 { return s.emfSumSince(name, time.Time{}) }

// emfSumSince adds up metric name over the router's EMF lines of
// intervals flushed at or after since.
func (s *stack) emfSumSince(name string, since time.Time) float64 {
	var total float64
	for l := range strings.SplitSeq(s.routerOut.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		aws, _ := m["_aws"].(map[string]any)
		ts, _ := aws["Timestamp"].(float64)
		if v, ok := m[name].(float64); ok && !time.UnixMilli(int64(ts)).Before(since) {
			total += v
		}
	}
	return total
}

// awaitEMF returns emfSum(name) once it is non-zero, waiting up to three
// metrics intervals for the router to flush it; 0 if it never is.
func (s *stack) awaitEMF(name string) float64 {
	for deadline := time.Now().Add(3500 * time.Millisecond); ; time.Sleep(50 * time.Millisecond) {
		if v := s.emfSum(name); v != 0 || time.Now().After(deadline) {
			return v
		}
	}
}

func noFerryHeaders(t *testing.T, h http.Header) {
	t.Helper()
	for k := range h {
		if strings.HasPrefix(k, "Ferry-") {
			t.Errorf("client saw header %s", k)
		}
	}
}

// concurrently sends n requests for path at once and tallies the statuses.
func (s *stack) concurrently(n int, path string) map[int]int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range n {
		wg.Go(func() {
			r := s.get(path)
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return statuses
}

// load runs workers that each send path in a loop (internal/load's closed
// loop) until stop closes; wait returns once the last has its answer.
func (s *stack) load(workers int, path string, stop <-chan struct{}) (results chan reply, wait func()) {
	results = make(chan reply, 100_000)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stop; cancel() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, h := range load.Closed(ctx, load.Target{Method: "GET", URL: s.ingress + path}, workers, time.Hour, load.Options{}) {
			r := reply{status: h.Code, body: string(h.Body)}
			if h.Code == 0 {
				r.err = errors.New(h.Err)
			}
			results <- r
		}
	}()
	return results, func() { <-done; close(results) }
}
