package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"golang.org/x/net/http2"

	"github.com/ferryrun/ferry/internal/load"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// stack is one emulator and one router, as processes, stopped by the test.
type stack struct {
	t         *testing.T
	ingress   string // http://host:port
	admin     string
	emulator  string
	routerOut *syncBuf // stdout: EMF lines
	routerLog *syncBuf
	router    *exec.Cmd
	routerCmd []string // how the router is started (restartRouter starts it again so)
	routerEnv []string
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

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

	s := &stack{t: t, routerOut: &syncBuf{}, routerLog: &syncBuf{}}
	emuAddr := freeAddr(t)
	s.emulator = "http://" + emuAddr
	emu := exec.Command(bins.emulator, "-config", cfgPath, "-listen", emuAddr)
	emu.Env = append(os.Environ(), testbin.RaceLog(bins.dir)...)
	emuLog := &syncBuf{}
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
	s.startRouter()
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
func (s *stack) startRouter() {
	s.router = exec.Command(s.routerCmd[0], s.routerCmd[1:]...)
	s.router.Env = s.routerEnv
	s.router.Stdout, s.router.Stderr = s.routerOut, s.routerLog
	if err := s.router.Start(); err != nil {
		s.t.Fatal(err)
	}
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
	status int
	body   string
	header http.Header
	err    error
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
	return reply{status: resp.StatusCode, body: string(b), header: resp.Header, err: err}
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
func (s *stack) emfSum(name string) float64 {
	var total float64
	sc := bufio.NewScanner(strings.NewReader(s.routerOut.String()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			if v, ok := m[name].(float64); ok {
				total += v
			}
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

func TestWarmPath(t *testing.T) {
	// The tunnel's reuse, not admission: each of these 5 ms requests
	// costs about 1 ms of the sandbox's 0.58 vCPU, so sharing would slow
	// them past the CPU budget and admission would rightly spread them.
	s := startStack(t, stackOpts{fnEnv: map[string]string{"FERRY_CPU_ADMISSION": "off", "FERRY_IDLE_LINGER": "1s"}})
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Go(func() {
			for i := range 40 {
				r := s.get(fmt.Sprintf("/work?wait_ms=5&w=%d&i=%d", w, i))
				if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"wait_ms":5`) {
					t.Errorf("request: %d %q %v", r.status, r.body, r.err)
				}
				noFerryHeaders(t, r.header)
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.quiesce()
	st := s.stats()
	if statuses[200] != 200 {
		t.Errorf("statuses %v, want 200 x 200", statuses)
	}
	if st.Invocations != 1 || st.SandboxesStarted != 1 {
		t.Errorf("emulator %+v; want the 200 requests in one invocation", st)
	}
}

func TestBurstIntoColdFunction(t *testing.T) {
	// Launch accounting against a fixed limit: with CPU admission off,
	// each instance takes its 10. (With it on, an instance that says it
	// is full makes the router launch more, by design.)
	s := startStack(t, stackOpts{
		routerEnv: map[string]string{"FERRY_ROUTER_MAX_CONCURRENCY": "10"},
		fnEnv:     map[string]string{"FERRY_CPU_ADMISSION": "off"},
	})
	statuses := s.concurrently(200, "/work?wait_ms=300")
	s.quiesce()
	st := s.stats()
	t.Logf("200 concurrent requests, limit 10: %d invocations, statuses %v", st.Invocations, statuses)
	if statuses[200] != 200 {
		t.Errorf("statuses %v, want all 200", statuses)
	}
	if st.Invocations > 22 {
		t.Errorf("%d invocations, want at most 22 (ceil(200/10) = 20)", st.Invocations)
	}
}

// TestTurnoverUnderContinuousLoad: instances reach their 5 s deadline and
// are replaced under load with no request failing; 12 s of load in make
// test, 30 s under make chaos.
func TestTurnoverUnderContinuousLoad(t *testing.T) {
	d := 12 * time.Second
	if os.Getenv("FERRY_CHAOS_FOR") != "" {
		d = 30 * time.Second
	}
	s := startStack(t, stackOpts{timeout: 5 * time.Second})
	stop := make(chan struct{})
	results, wait := s.load(8, "/work?wait_ms=50", stop)
	time.Sleep(d) // the load's length
	close(stop)
	wait()
	ok, failed := 0, map[string]int{}
	for r := range results {
		if r.err == nil && r.status == 200 {
			ok++
		} else {
			failed[fmt.Sprintf("%d %v %.80s", r.status, r.err, r.body)]++
		}
	}
	s.quiesce()
	st := s.stats()
	t.Logf("%d requests succeeded over %d invocations in %v (5 s timeout)", ok, st.Invocations, d)
	if len(failed) > 0 {
		t.Errorf("failed requests: %v", failed)
	}
	if want := int64(d / (5 * time.Second)); st.Invocations < want {
		t.Errorf("only %d invocations in %v with a 5 s timeout, want %d or more: instances did not turn over", st.Invocations, d, want)
	}
	// 8 clients kept streams in flight the whole time.
	if v := s.awaitEMF("InFlightPerInstance"); v <= 0 {
		t.Errorf("InFlightPerInstance summed %v over the run, want streams in flight", v)
	}
}

func TestSandboxKilledMidLoad(t *testing.T) {
	s := startStack(t, stackOpts{routerEnv: map[string]string{"FERRY_ROUTER_MAX_CONCURRENCY": "32"}})
	stop := make(chan struct{})
	results, wait := s.load(10, "/work?wait_ms=400", stop)
	var victim pool.InstanceState
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if p := s.pool(); len(p.Instances) == 1 && p.Instances[0].InFlight >= 5 {
			victim = p.Instances[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no busy instance: %+v", s.pool())
		}
	}
	var sb []lambdaemu.SandboxInfo
	resp, err := http.Get(s.emulator + "/_emulator/sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&sb)
	resp.Body.Close()
	if len(sb) != 1 {
		t.Fatalf("sandboxes %+v, want one", sb)
	}
	syscall.Kill(-sb[0].PID, syscall.SIGKILL) // the whole sandbox: bootstrap and app
	killedAt := time.Now()

	// The pool forgets the instance.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		gone := true
		for _, in := range s.pool().Instances {
			gone = gone && in.RequestID != victim.RequestID
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pool still lists the killed instance")
		}
	}
	time.Sleep(2 * time.Second) // the router keeps serving
	close(stop)
	wait()
	statuses := map[int]int{}
	okAfter := 0
	for r := range results {
		statuses[r.status]++
		if r.status == 502 && !strings.Contains(r.body, "failed after the request reached it") {
			t.Errorf("502 body %q does not say what happened", r.body)
		}
		if r.status != 200 && r.status != 502 {
			t.Errorf("unexpected reply %d %q %v", r.status, r.body, r.err)
		}
		if r.status == 200 {
			okAfter++
		}
	}
	t.Logf("statuses %v (killed at %s)", statuses, killedAt.Format(time.StampMilli))
	if statuses[502] == 0 || statuses[502] > 10 {
		t.Errorf("%d requests got 502, want the ones in flight on the killed sandbox (1..10)", statuses[502])
	}
	if statuses[200] < 20 {
		t.Errorf("only %d requests succeeded: the router did not keep serving", statuses[200])
	}
}

func TestStreamingThroughRouter(t *testing.T) {
	s := startStack(t, stackOpts{})
	resp, err := client.Get(s.ingress + "/stream?chunks=3&interval_ms=400")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	noFerryHeaders(t, resp.Header)
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	gotFirst := time.Now().UnixMilli()
	if err != nil || !strings.HasPrefix(first, "chunk 0") {
		t.Fatalf("first chunk %q, %v", first, err)
	}
	rest, _ := io.ReadAll(br)
	var lastAt int64
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	if len(lines) != 2 {
		t.Fatalf("rest %q", rest)
	}
	fmt.Sscanf(lines[1], "chunk 2 at %d", &lastAt)
	if lastAt <= gotFirst {
		t.Errorf("first chunk reached the client at %d, after the app wrote its last at %d", gotFirst, lastAt)
	}
}

func TestLimits(t *testing.T) {
	s := startStack(t, stackOpts{routerEnv: map[string]string{
		"FERRY_ROUTER_MAX_HEADER_BYTES": "4096", "FERRY_ROUTER_MAX_BODY_BYTES": "100000", "FERRY_ROUTER_ROUTES": "app=/work,app=/echo,app=/healthz",
	}})
	stop := make(chan struct{})
	results, wait := s.load(4, "/work?wait_ms=20", stop) // other traffic, which must not suffer
	type tc struct {
		req        func() reply
		wantStatus int
		wantBody   string
	}
	big := bytes.Repeat([]byte("x"), 200_000)
	cases := map[string]tc{
		"oversized headers": {func() reply {
			return s.do("GET", "/echo", nil, http.Header{"X-Big": {strings.Repeat("h", 8000)}})
		}, 431, "Request Header Fields Too Large"},
		"oversized body with length": {func() reply {
			return s.do("POST", "/echo", bytes.NewReader(big), nil)
		}, 413, "exceeds the limit of 100000"},
		"oversized chunked body": {func() reply {
			return s.do("POST", "/echo", io.MultiReader(bytes.NewReader(big)), nil) // no length: chunked
		}, 413, "exceeds the limit of 100000"},
		"unknown route": {func() reply { return s.get("/nowhere") }, 404, `no route for host "127.0.0.1" and path "/nowhere"`},
		// Routes see the path the app will resolve: a dot segment, plain
		// or with an encoded slash, cannot take a request past its route.
		"dot segments out of a route":         {func() reply { return s.get("/echo/../nowhere") }, 404, `path "/nowhere"`},
		"encoded slash out of a route":        {func() reply { return s.get("/echo/..%2Fnowhere") }, 404, `path "/nowhere"`},
		"dot segments reach the app resolved": {func() reply { return s.get("/work/../echo") }, 200, `"path":"/echo"`},
		"body within limits": {func() reply {
			return s.do("POST", "/echo", bytes.NewReader(big[:90_000]), nil)
		}, 200, `"body_bytes":90000`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := c.req()
			if r.status != c.wantStatus || !strings.Contains(r.body, c.wantBody) {
				t.Errorf("got %d %.200q, want %d containing %q", r.status, r.body, c.wantStatus, c.wantBody)
			}
		})
	}
	close(stop)
	wait()
	for r := range results {
		if r.status != 200 {
			t.Errorf("concurrent good request got %d %q %v", r.status, r.body, r.err)
		}
	}
}

func TestProxyBehaviour(t *testing.T) {
	s := startStack(t, stackOpts{})

	t.Run("h2c on the ingress port, with X-Forwarded headers", func(t *testing.T) {
		h2c := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}}
		req, _ := http.NewRequest("GET", s.ingress+"/echo", nil)
		req.Host = "app.example.com"
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var echo struct{ Headers map[string][]string }
		json.NewDecoder(resp.Body).Decode(&echo)
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("got %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
		}
		want := map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "app.example.com"}
		for k, v := range want {
			if got := echo.Headers[k]; len(got) != 1 || got[0] != v {
				t.Errorf("app saw %s = %v, want %q", k, got, v)
			}
		}
	})

	t.Run("client Ferry headers do not reach the app", func(t *testing.T) {
		r := s.do("GET", "/echo", nil, http.Header{"Ferry-Nack": {"forged"}})
		if r.status != 200 || strings.Contains(r.body, "Ferry-Nack") {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})

	t.Run("trailers pass through", func(t *testing.T) {
		resp, err := client.Get(s.ingress + "/echo?trailer=t1")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Echo-Trailer"); got != "t1" {
			t.Errorf("trailer = %q, want t1", got)
		}
	})

	t.Run("client disconnect cancels the stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", s.ingress+"/work?wait_ms=10000", nil)
		if _, err := client.Do(req); err == nil {
			t.Fatal("request outlived its context")
		}
		// The slot frees long before the app's 10 s wait would end.
		if !s.awaitNoStreams(3 * time.Second) {
			t.Fatalf("stream still in flight 3 s after the client left: %+v", s.pool())
		}
	})
}

// TestMalformedFramingIsAClientError: request smuggling's shape
// (Content-Length with Transfer-Encoding) is refused with 400 and the
// connection closed, so the request hidden in its body never reaches the
// app (it once did, on the kept-alive connection); a malformed chunked body
// is a 400, not a 502 and a warning.
func TestMalformedFramingIsAClientError(t *testing.T) {
	s := startStack(t, stackOpts{})
	for name, tc := range map[string]struct {
		raw  string
		want string
	}{
		"Content-Length with Transfer-Encoding": {
			raw: "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 55\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"0\r\n\r\nGET /echo?smuggled=1 HTTP/1.1\r\nHost: app\r\n\r\n",
			want: "Content-Length together with Transfer-Encoding",
		},
		"chunk size past 64 bits": {
			raw:  "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
			want: "malformed or cut short",
		},
		"chunk size not hex": {
			raw:  "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
			want: "malformed or cut short",
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.raw)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(b), tc.want) {
				t.Errorf("got %d %q, want 400 saying %q", resp.StatusCode, b, tc.want)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the 400 the connection carried %q (%v), want it closed", rest, err)
			}
		})
	}
}

// Every request the router answered is counted, also one whose client
// hung up mid-body, which aborts the proxy's handler. (Such requests once
// went uncounted: a client that closes its connection as soon as it has
// the bytes a Content-Length promised, a hair before the instance's stream
// ends, made `ferry metrics` count fewer requests than clients saw served.)
func TestClientLeavingMidBodyIsCounted(t *testing.T) {
	s := startStack(t, stackOpts{})
	c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /stream?chunks=3&interval_ms=2000 HTTP/1.1\r\nHost: app\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.StatusCode != 200 || !strings.HasPrefix(first, "chunk 0") {
		t.Fatalf("got %d %q, %v", resp.StatusCode, first, err)
	}
	c.Close()
	if got := s.awaitEMF("Requests"); got != 1 {
		t.Errorf("router counted %v requests, want 1", got)
	}
	if got := s.emfSum("Errors5xx"); got != 0 {
		t.Errorf("router counted %v 5xx for a client that left", got)
	}
	if strings.Contains(s.routerLog.String(), "cut short") {
		t.Errorf("a client that left was taken for a broken instance:\n%s", s.routerLog.String())
	}
}

// Sparse traffic: each request finds no instance, and any linger would be
// paid in full before a new invocation all the same. The pool learns the
// gaps and the invocations' overhead from what they report, and asks new
// instances to end as soon as they are idle.
func TestSparseTrafficLingersNot(t *testing.T) {
	// Tunnels only: with plain invocations, such requests soon go plain
	// (TestPlainInvocationsWhereNothingShares).
	s := startStack(t, stackOpts{routerEnv: map[string]string{"FERRY_ROUTER_PLAIN": "off"}})
	const n = 12
	for i := range n {
		if r := s.get("/work?wait_ms=5"); r.status != 200 {
			t.Fatalf("request %d: %d %s %v", i, r.status, r.body, r.err)
		}
		s.quiesce() // the instance has ended: the next request is on its own
	}
	p := s.pool()
	t.Logf("pool after %d sparse requests: linger %d us, overhead %d us, %d gaps", n, p.LingerUs, p.OverheadUs, p.LingerGaps)
	if p.LingerGaps < n/2 || p.OverheadUs <= 0 {
		t.Fatalf("pool learnt %d gaps and an overhead of %d us from %d sparse requests: %+v", p.LingerGaps, p.OverheadUs, n, p)
	}
	if p.LingerUs != 0 {
		t.Errorf("pool asks new instances to linger %d us with gaps of over 50 ms and an overhead of %d us; want 0", p.LingerUs, p.OverheadUs)
	}
	if st := s.stats(); st.Invocations != n {
		t.Errorf("%d invocations for %d requests, each alone", st.Invocations, n)
	}
}

// Only ferry may refuse a request: an app that answers 503 with the nack
// header after doing the work is answered as it is, never run again on
// another instance (a POST once ran five times this way).
func TestAppCannotForgeANack(t *testing.T) {
	s := startStack(t, stackOpts{})
	r := s.do("POST", "/echo?status=503&header=Ferry-Nack:cpu&header=Ferry-Load:inflight%3D0", strings.NewReader("once"), nil)
	if r.status != 503 || !strings.Contains(r.body, `"body":"once"`) {
		t.Errorf("got %d %q; want the app's own 503 with its echo", r.status, r.body)
	}
	noFerryHeaders(t, r.header)
	if n := s.awaitEMF("Nacks"); n != 0 {
		t.Errorf("router counted %v nacks: it took the app's header for ferry's", n)
	}
	if got := s.emfSum("Requests"); got != 1 {
		t.Errorf("router counted %v requests, want 1", got)
	}
}

// Behind a load balancer the app sees the client's address and scheme as
// the balancer saw them; from anyone else such headers are replaced, so a
// client cannot claim another address.
func TestForwardedHeadersFromTrustedProxiesOnly(t *testing.T) {
	cases := []struct {
		name, trusted     string
		wantFor, wantProt string
	}{
		{"untrusted client", "", "127.0.0.1", "http"},
		{"trusted balancer", "127.0.0.0/8", "203.0.113.9, 127.0.0.1", "https"},
		{"balancer elsewhere", "10.0.0.0/16", "127.0.0.1", "http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.trusted != "" {
				env["FERRY_ROUTER_TRUSTED_PROXIES"] = tc.trusted
			}
			s := startStack(t, stackOpts{routerEnv: env})
			r := s.do("GET", "/echo", nil, http.Header{"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"}})
			var echo struct{ Headers map[string][]string }
			if err := json.Unmarshal([]byte(r.body), &echo); err != nil || r.status != 200 {
				t.Fatalf("got %d %q", r.status, r.body)
			}
			if got := strings.Join(echo.Headers["X-Forwarded-For"], ","); got != tc.wantFor {
				t.Errorf("app saw X-Forwarded-For %q, want %q", got, tc.wantFor)
			}
			if got := strings.Join(echo.Headers["X-Forwarded-Proto"], ","); got != tc.wantProt {
				t.Errorf("app saw X-Forwarded-Proto %q, want %q", got, tc.wantProt)
			}
		})
	}
}

// A client that trickles its body holds an instance slot no longer than the
// body timeout and its pace allow: then it gets 408, the slot frees, and
// nothing counts as the instance's failure (400 such clients once held
// their slots and goroutines for as long as they trickled).
func TestTrickledBodyFreesItsSlot(t *testing.T) {
	s := startStack(t, stackOpts{routerEnv: map[string]string{"FERRY_ROUTER_BODY_TIMEOUT": "1s"}})
	c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Past the router's 64 KiB replay buffer, so the body streams to an
	// instance while it trickles.
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 200000\r\n\r\n")
	c.Write(bytes.Repeat([]byte("x"), 70_000))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	held := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !held; time.Sleep(50 * time.Millisecond) {
		for _, in := range s.pool().Instances {
			held = held || in.InFlight > 0
		}
	}
	if !held {
		t.Fatal("the trickled request never reached an instance")
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("got %d %q after %v, want 408", resp.StatusCode, b, time.Since(start))
	}
	if !s.awaitNoStreams(3 * time.Second) {
		t.Fatalf("slot still held after the 408: %+v", s.pool())
	}
	if n := s.awaitEMF("Requests"); n != 1 || s.emfSum("Errors5xx") != 0 {
		t.Errorf("metrics: %v requests, %v 5xx; want 1 and 0", n, s.emfSum("Errors5xx"))
	}
	if strings.Contains(s.routerLog.String(), "instance failed mid-request") {
		t.Errorf("the client's slowness was taken for the instance's failure:\n%s", tail(s.routerLog.String(), 2000))
	}
	// A body sent at once, then an answer that takes longer than the body
	// timeout: the pace ends with the body, not the request.
	if r := s.do("GET", "/work?wait_ms=2500", strings.NewReader("prompt"), nil); r.status != 200 {
		t.Errorf("a prompt body with a 2.5 s answer at a 1 s body timeout: %d %q %v", r.status, r.body, r.err)
	}
}

func TestThrottledInvokesAreRetried(t *testing.T) {
	// One concurrent invocation allowed, one stream per instance: every
	// launch past the first is throttled until an instance ends.
	s := startStack(t, stackOpts{concurrency: 1, routerEnv: map[string]string{"FERRY_ROUTER_MAX_CONCURRENCY": "1"}})
	statuses := s.concurrently(4, "/work?wait_ms=200")
	s.quiesce()
	throttles := s.awaitEMF("Throttles")
	t.Logf("statuses %v, throttled invokes %v", statuses, throttles)
	if statuses[200] != 4 {
		t.Errorf("statuses %v, want all 4 to succeed", statuses)
	}
	if throttles == 0 {
		t.Error("no invoke was throttled: the test did not exercise the retry")
	}
}

func TestGracefulShutdown(t *testing.T) {
	s := startStack(t, stackOpts{})
	done := make(chan reply, 1)
	go func() { done <- s.get("/work?wait_ms=1500") }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if p := s.pool(); len(p.Instances) == 1 && p.Instances[0].InFlight == 1 {
			break // in flight on an instance
		}
		if time.Now().After(deadline) {
			t.Fatalf("the request never went in flight: %+v", s.pool())
		}
	}
	if err := s.router.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.status != 200 {
		t.Errorf("in-flight request during shutdown: %d %q %v", r.status, r.body, r.err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.router.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("router exit: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("router did not exit within its shutdown timeout")
	}
	if _, err := http.Get(s.ingress + "/work"); err == nil {
		t.Error("router still accepts requests after shutdown")
	}
}

func TestBrokenFunctionFailsClearlyNotSilently(t *testing.T) {
	// The app cannot start until a file exists: every invocation ends in
	// an init error and no instance dials back; then it is mended.
	mended := filepath.Join(t.TempDir(), "mended")
	s := startStack(t, stackOpts{
		fnEnv: map[string]string{"FERRY_APP_CMD": fmt.Sprintf("test -f %s && exec %s || { echo no such server; exit 7; }",
			mended, filepath.Join(bins.code, "goapp"))},
		routerEnv: map[string]string{"FERRY_ROUTER_QUEUE_TIMEOUT": "20s"},
	})
	const failing = "is failing to start (Ferry.AppStartFailed)"
	start := time.Now()
	r := s.get("/work")
	if r.status != 502 || !strings.Contains(r.body, failing) {
		t.Fatalf("got %d %q, want 502 naming the failure class", r.status, r.body)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("answered after %v: the request waited out the queue instead of failing with the launches", took)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("502 without Retry-After")
	}
	if strings.Contains(r.body, "no such server") {
		t.Errorf("the client read the function's own error text: %q", r.body)
	}
	// While failing: every request fails at once, and launches back off
	// instead of following the requests.
	before := s.stats().Invocations
	for range 20 {
		start := time.Now()
		if r := s.get("/work"); r.status != 502 || !strings.Contains(r.body, failing) {
			t.Fatalf("while failing: %d %q", r.status, r.body)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("a request while failing took %v, want an answer at once", took)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.stats().Invocations - before; n > 4 {
		t.Errorf("%d invocations for 20 requests in about a second to a failing function: launches do not back off", n)
	}
	p := s.pool()
	if p.Failing != "Ferry.AppStartFailed" || p.ConsecutiveFailures < pool.FailingThreshold {
		t.Errorf("/pool shows failing %q after %d failures, want Ferry.AppStartFailed after at least %d", p.Failing, p.ConsecutiveFailures, pool.FailingThreshold)
	}
	if n := s.awaitEMF("LaunchFailures"); n < pool.FailingThreshold {
		t.Errorf("LaunchFailures metric %v, want at least %d", n, pool.FailingThreshold)
	}
	// The router's log has the function's own error.
	if !strings.Contains(s.routerLog.String(), "no such server") && !strings.Contains(s.routerLog.String(), "Ferry.AppStartFailed") {
		t.Errorf("router log lacks the function's error:\n%s", tail(s.routerLog.String(), 2000))
	}

	// Mended: the pool finds out by itself, within its launch backoff.
	if err := os.WriteFile(mended, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r := s.get("/work")
		if r.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d %q 45 s after the function was mended", r.status, r.body)
		}
	}
	if p := s.pool(); p.Failing != "" || p.ConsecutiveFailures != 0 {
		t.Errorf("after recovery /pool shows failing %q, %d failures", p.Failing, p.ConsecutiveFailures)
	}
}

// TestSurplusInstanceClosedAtJoin: an instance that dials back after the
// request it was launched for has gone (here: its client gave up while
// the app was still starting) is closed as it joins, not left billing
// while it waits for a stream that will not come.
func TestSurplusInstanceClosedAtJoin(t *testing.T) {
	s := startStack(t, stackOpts{fnEnv: map[string]string{
		"FERRY_APP_CMD": "sleep 0.5 && exec " + filepath.Join(bins.code, "goapp"),
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, "GET", s.ingress+"/work", nil)
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the request was answered (%d) before its client gave up: the app started too fast for this test", resp.StatusCode)
	}
	cancel()
	for deadline := time.Now().Add(20 * time.Second); s.pool().Stats.Surplus == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no instance closed as surplus; pool %+v", s.pool())
		}
	}
	s.quiesce()
	if p := s.pool(); p.Stats.Joined != 1 || p.Stats.Surplus != 1 {
		t.Errorf("pool stats %+v, want the one instance joined and closed as surplus", p.Stats)
	}
	if st := s.stats(); st.Invocations != 1 || st.Errors != 0 {
		t.Errorf("emulator %+v, want one invocation, ended cleanly", st)
	}
}

// Where tunnel invocations each take only the request they were started
// for (requests one at a time, the instance gone between them), requests
// go as plain invocations: one invoke each, the request in its payload,
// reaching the app and the client as they would through a tunnel. A
// response too large for an invoke result fails clearly, and sends the
// function's requests back to tunnels.
func TestPlainInvocationsWhereNothingShares(t *testing.T) {
	s := startStack(t, stackOpts{})
	for i := 0; !s.pool().PlainMode; i++ {
		if i == 12 {
			t.Fatalf("still on tunnels after %d lone requests: %+v", i, s.pool())
		}
		if r := s.get("/work?wait_ms=5"); r.status != 200 {
			t.Fatalf("request %d: %d %s %v", i, r.status, r.body, r.err)
		}
		s.quiesce()
	}
	plainBefore, invBefore := s.pool().Stats.Plain, s.stats().Invocations

	bin := []byte(strings.Repeat("h\u00e9llo\x00\x01\u4e16 ", 30)) // the echo is JSON: valid UTF-8
	r := s.do("POST", "/echo?x=1&y=a%2Fb", bytes.NewReader(bin), http.Header{"X-Test": {"a"}, "Cookie": {"c1=1; c2=2"}})
	var echo struct {
		Method, Path, Query, Host, Body string
		BodyBytes                       int `json:"body_bytes"`
		Headers                         map[string][]string
		Cookies                         map[string]string
	}
	if r.status != 200 || json.Unmarshal([]byte(r.body), &echo) != nil {
		t.Fatalf("POST /echo: %d %q %v", r.status, r.body, r.err)
	}
	if echo.Method != "POST" || echo.Path != "/echo" || echo.Query != "x=1&y=a%2Fb" || echo.Body != string(bin) ||
		echo.BodyBytes != len(bin) || echo.Cookies["c1"] != "1" || echo.Cookies["c2"] != "2" ||
		len(echo.Headers["X-Test"]) != 1 || echo.Headers["X-Test"][0] != "a" || !strings.HasPrefix(echo.Host, "127.0.0.1") ||
		len(echo.Headers["X-Forwarded-For"]) != 1 || echo.Headers["X-Forwarded-For"][0] != "127.0.0.1" {
		t.Errorf("app saw %+v", echo)
	}
	r = s.get("/echo?status=201&cookie=s%3D1&cookie=t%3D2&header=X-Multi:v")
	if r.status != 201 || r.header.Get("X-Multi") != "v" || r.header.Get("X-Echo") != "yes" ||
		!slices.Equal(r.header.Values("Set-Cookie"), []string{"s=1", "t=2"}) {
		t.Errorf("GET /echo: %d %v", r.status, r.header)
	}
	noFerryHeaders(t, r.header)
	r = s.get("/binary?bytes=1000")
	if r.status != 200 || len(r.body) != 1000 || r.body[255] != 255 || r.body[256] != 0 {
		t.Errorf("GET /binary: %d, %d bytes", r.status, len(r.body))
	}
	if n := s.pool().Stats.Plain - plainBefore; n != 3 {
		t.Errorf("%d of 3 requests went plain", n)
	}
	if n := s.stats().Invocations - invBefore; n != 3 {
		t.Errorf("%d invocations for 3 plain requests", n)
	}

	// A body too large to keep for a retry goes through a tunnel.
	big := strings.Repeat("b", 100<<10)
	if r := s.do("POST", "/echo", strings.NewReader(big), nil); r.status != 200 || !strings.Contains(r.body, `"body_bytes":102400`) {
		t.Errorf("POST of 100 KiB: %d %.200s", r.status, r.body)
	}
	if n := s.pool().Stats.Plain - plainBefore; n != 3 {
		t.Errorf("a 100 KiB body went plain")
	}
	s.quiesce()

	r = s.get(fmt.Sprintf("/binary?bytes=%d", 7<<20))
	if r.status != 502 || !strings.Contains(r.body, "Ferry.ResponseTooLarge") {
		t.Errorf("7 MiB answer through a plain invocation: %d %.300s", r.status, r.body)
	}
	if p := s.pool(); p.PlainMode {
		t.Errorf("still plain after a response too large for it: %+v", p)
	}
	r = s.get(fmt.Sprintf("/binary?bytes=%d", 7<<20))
	if r.status != 200 || len(r.body) != 7<<20 {
		t.Errorf("7 MiB answer after: %d, %d bytes", r.status, len(r.body))
	}
}

// An instance says when it has room again, between answers: at 512 MB
// (0.29 vCPU) an API request (10 ms of CPU, then 100 ms waiting) leaves no
// room for another while it computes, and room for one once it waits.
// The instance's load stream tells the router so while the request is
// still in flight (without it, the router learns nothing until the
// answer). Whether a request then joins is the pool's room rule; timing
// it here would measure the machine.
func TestInstanceSaysWhenItHasRoom(t *testing.T) {
	s := startStack(t, stackOpts{memoryMB: 512, fnEnv: map[string]string{"FERRY_LOAD_STREAM": "on"},
		routerEnv: map[string]string{"FERRY_ROUTER_PLAIN": "off"}})
	const api = "/work?cpu_ms=10&wait_ms=100"
	for i := range 6 { // the sandbox learns what the request costs (past its first, slower ones)
		if r := s.get(api); r.status != 200 {
			t.Fatalf("request %d: %d %s %v", i, r.status, r.body, r.err)
		}
		s.quiesce()
	}
	// A busy machine can stretch a request's CPU past its window of
	// room: a few tries, each a request alone and a look for its room.
	var seen []pool.InstanceState
	found := false
	for try := 0; try < 5 && !found; try++ {
		s.quiesce()
		first := make(chan reply, 1)
		go func() { first <- s.get(api) }()
	look:
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			p := s.pool()
			if len(p.Instances) == 1 && p.Instances[0].InFlight == 1 && p.Instances[0].Room >= 1 {
				found = true
				break
			}
			if len(p.Instances) == 1 {
				seen = append(seen[max(len(seen)-2, 0):], p.Instances[0]) // the last few
			}
			select {
			case r := <-first:
				first <- r
				break look
			default:
			}
		}
		if r := <-first; r.status != 200 {
			t.Fatalf("first request: %d %s", r.status, r.body)
		}
	}
	if !found {
		t.Fatalf("in 5 tries, no instance said it had room beside a request waiting; last seen %+v", seen)
	}
}

// TestCommandLines: the router and the emulator answer --help and
// --version, and refuse what they do not take with status 2, before
// starting anything (the router once served when asked for help).
func TestCommandLines(t *testing.T) {
	routerEnv := append(os.Environ(), "FERRY_ROUTER_ROUTES=app=/", "FERRY_ROUTER_LISTEN=127.0.0.1:0",
		"FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0", "FERRY_ROUTER_ADMIN_LISTEN=127.0.0.1:0", "AWS_REGION=us-east-1")
	for _, tc := range []struct {
		name           string
		bin            string
		args           []string
		code           int
		stdout, stderr string
	}{
		{"router help", bins.router, []string{"--help"}, 0, "FERRY_ROUTER_QUEUE_TIMEOUT", ""},
		{"router help word", bins.router, []string{"help"}, 0, "usage:", ""},
		{"router version", bins.router, []string{"--version"}, 0, "ferry-router ", ""},
		{"router argument", bins.router, []string{"serve"}, 2, "", `unknown argument "serve"`},
		{"emulator help", bins.emulator, []string{"--help"}, 0, "-config", ""},
		{"emulator version", bins.emulator, []string{"--version"}, 0, "lambda-emulator ", ""},
		{"emulator without config", bins.emulator, nil, 2, "", "-config is required"},
		{"emulator unknown flag", bins.emulator, []string{"-conf", "x"}, 2, "", "flag provided but not defined"},
		{"emulator config missing", bins.emulator, []string{"-config", filepath.Join(t.TempDir(), "none.json")}, 1, "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tc.bin, tc.args...)
			cmd.Env = routerEnv
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, tail(stdout.String(), 300), tail(stderr.String(), 300), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// TestMisspeltSettingIsNamed: a FERRY_ROUTER_ variable the router does not
// read is warned about with the name meant, never silently ignored.
func TestMisspeltSettingIsNamed(t *testing.T) {
	cmd := exec.Command(bins.router)
	cmd.Env = append(os.Environ(), "FERRY_ROUTER_ROUTES=app=/", "FERRY_ROUTER_LISTEN=127.0.0.1:0",
		"FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0", "FERRY_ROUTER_ADMIN_LISTEN=127.0.0.1:0", "AWS_REGION=us-east-1",
		"FERRY_ROUTER_QUEUE_TIMOUT=5s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	found := make(chan string, 1)
	go func() {
		var seen []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if strings.Contains(sc.Text(), "FERRY_ROUTER_QUEUE_TIMOUT") {
				found <- sc.Text()
				io.Copy(io.Discard, stderr)
				return
			}
		}
		found <- "no warning in:\n" + strings.Join(seen, "\n")
	}()
	select {
	case line := <-found:
		if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, "did you mean FERRY_ROUTER_QUEUE_TIMEOUT?") || strings.Contains(line, "5s") {
			t.Errorf("want a warning naming FERRY_ROUTER_QUEUE_TIMEOUT, without the value; got %s", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no warning within 10s")
	}
}

// TestRoutesFromParameter: routes kept in an SSM parameter (moto here)
// serve within seconds of being written, with no restart; a document that
// cannot be used leaves the routes in force and is named in the log; a
// route removed there stops serving.
func TestRoutesFromParameter(t *testing.T) {
	endpoint := testbin.Moto(t)
	params := ssm.New(ssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		})})
	const name = "/ferry/test/routes"
	put := func(doc string) {
		t.Helper()
		if _, err := params.PutParameter(t.Context(), &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(doc),
			Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
	}
	put(`{"routes": []}`)
	s := startStack(t, stackOpts{routerEnv: map[string]string{
		"FERRY_ROUTER_ROUTES": "app=/echo", "FERRY_ROUTER_ROUTES_PARAMETER": name, "FERRY_ROUTER_ROUTES_POLL": "1s",
		"AWS_ENDPOINT_URL": endpoint,
	}})
	// until waits up to 5 s for GET /work to answer want.
	until := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := s.get("/work")
			if got.status == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /work: %d %q %v; want %d within 5s", got.status, got.body, got.err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := s.get("/work"); got.status != http.StatusNotFound {
		t.Fatalf("GET /work before any route: %d, want 404", got.status)
	}
	if got := s.get("/echo"); got.status != http.StatusOK {
		t.Fatalf("GET /echo (the configured route): %d %q, want 200", got.status, got.body)
	}
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	until(http.StatusOK)

	put(`{"routes": [{"function": "app", "path_prefix": "work"}]}`)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.routerLog.String(), `must start with /`) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning for a bad routes document; router log:\n%s", tail(s.routerLog.String(), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := s.get("/work"); got.status != http.StatusOK {
		t.Errorf("GET /work after a bad document: %d, want the route in force to stay", got.status)
	}

	put(`{"routes": []}`)
	until(http.StatusNotFound)
	if got := s.get("/echo"); got.status != http.StatusOK {
		t.Errorf("GET /echo after the parameter emptied: %d, want the configured route to stay", got.status)
	}

	// Deleted, the parameter takes its routes with it, and says so once;
	// made again (its version starts again at 1), it is read again.
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	until(http.StatusOK)
	if _, err := params.DeleteParameter(t.Context(), &ssm.DeleteParameterInput{Name: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	until(http.StatusNotFound)
	time.Sleep(3 * time.Second) // three more polls
	if n := strings.Count(s.routerLog.String(), "does not exist"); n != 1 {
		t.Errorf("%d warnings that the parameter does not exist over several polls, want 1", n)
	}
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	until(http.StatusOK)
}
