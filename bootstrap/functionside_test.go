package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/ferryrun/ferry/bootstrap/serve"
	"github.com/ferryrun/ferry/internal/dialback"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
)

// Built once: the layer (bootstrap + exec wrapper) and the Go sample app;
// raceDir holds what a race-built bootstrap finds (testbin.RaceLog).
var layerDir, goappDir, raceDir string

func TestMain(m *testing.M) {
	root, err := os.MkdirTemp("", "bootstrap-test-")
	if err != nil {
		panic(err)
	}
	layerDir, goappDir, raceDir = filepath.Join(root, "layer"), filepath.Join(root, "goapp"), root
	os.MkdirAll(layerDir, 0o755)
	os.MkdirAll(goappDir, 0o755)
	_, err = testbin.Build(layerDir, "./bootstrap")
	if err == nil {
		_, err = testbin.Build(goappDir, "./examples/goapp")
	}
	if err == nil {
		var w []byte
		if w, err = os.ReadFile("wrapper/ferry-exec-wrapper"); err == nil {
			err = os.WriteFile(filepath.Join(layerDir, "ferry-exec-wrapper"), w, 0o755)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if races := testbin.RaceReports(raceDir); races != "" {
		fmt.Fprintf(os.Stderr, "the race-built bootstrap found data races:\n%s", races)
		code = 1
	}
	os.RemoveAll(root)
	os.Exit(code)
}

// goFunction is the Go sample app behind the real bootstrap layer.
func goFunction(name string, timeout time.Duration, env map[string]string) lambdaemu.Function {
	e := map[string]string{"FERRY_APP_CMD": filepath.Join(goappDir, "goapp"), "FERRY_READINESS_PATH": "/healthz"}
	for _, kv := range testbin.RaceLog(raceDir) {
		k, v, _ := strings.Cut(kv, "=")
		e[k] = v
	}
	for k, v := range env {
		e[k] = v
	}
	return lambdaemu.Function{
		Name: name, CodeDir: goappDir, Layers: []string{layerDir}, Runtime: "provided.al2023",
		Timeout: lambdaemu.Duration{Duration: timeout}, MemoryMB: 512, Env: e, Concurrency: 4,
	}
}

func newEmulator(t *testing.T, fns ...lambdaemu.Function) *lambdaemu.Emulator {
	t.Helper()
	emu, err := lambdaemu.New(lambdaemu.Config{Functions: fns}, lambdaemu.Options{FunctionLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}

// testRouter is the router's end of the tunnel, played by the test through
// internal/tunnel: it mints tokens, accepts tunnels and hands them over.
type testRouter struct {
	addr   string
	pin    string
	issuer *tunnel.Issuer
	conns  chan *tunnel.Conn
}

func newTestRouter(t *testing.T) *testRouter {
	t.Helper()
	cert, err := tunnel.GenerateCertificate(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	iss, _ := tunnel.NewIssuer(bytes.Repeat([]byte{7}, 32), 5*time.Second, nil)
	r := &testRouter{pin: tunnel.Pin(cert.Leaf), issuer: iss, conns: make(chan *tunnel.Conn, 4)}
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		TLS: tunnel.ServerTLSConfig(cert),
		Authenticate: func(_ context.Context, h tunnel.Hello) (tunnel.Claims, error) {
			return iss.Redeem(h.Token, h.FunctionARN)
		},
		OnConn: func(c *tunnel.Conn) { r.conns <- c },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx, ln)
	t.Cleanup(cancel)
	return r
}

type invokeResult struct {
	res lambdaemu.InvokeResult
	err error
}

// dialBack invokes function with a dial-back payload and returns the tunnel
// and a channel with the invocation's result.
func (r *testRouter) dialBack(t *testing.T, emu *lambdaemu.Emulator, function string, maxConc int) (*tunnel.Conn, <-chan invokeResult) {
	t.Helper()
	// The router's linger, which a function's own FERRY_IDLE_LINGER
	// overrides: long enough that a test goroutine slowed by -race on a
	// busy machine still sends its next request before the instance ends.
	return r.dialBackLinger(t, emu, function, maxConc, 300*time.Millisecond)
}

// dialBackLinger is dialBack with the router asking for linger.
func (r *testRouter) dialBackLinger(t *testing.T, emu *lambdaemu.Emulator, function string, maxConc int, linger time.Duration) (*tunnel.Conn, <-chan invokeResult) {
	t.Helper()
	return r.dialBackWith(t, emu, dialback.Payload{Function: function, MaxConcurrency: maxConc}.WithLinger(linger))
}

// dialBackWith invokes p.Function with p, its router, token and pin
// filled in.
func (r *testRouter) dialBackWith(t *testing.T, emu *lambdaemu.Emulator, p dialback.Payload) (*tunnel.Conn, <-chan invokeResult) {
	t.Helper()
	tok, _, err := r.issuer.Mint(p.Function)
	if err != nil {
		t.Fatal(err)
	}
	function := p.Function
	p.Router, p.Token, p.Pin = r.addr, tok, r.pin
	payload, _ := dialback.Marshal(p)
	done := make(chan invokeResult, 1)
	go func() {
		res, err := emu.Invoke(context.Background(), function, payload, "")
		done <- invokeResult{res, err}
	}()
	select {
	case c := <-r.conns:
		t.Cleanup(func() { c.Close() })
		return c, done
	case res := <-done:
		t.Fatalf("invocation ended without a tunnel: %+v %v", res.res, res.err)
	case <-time.After(15 * time.Second):
		t.Fatal("no tunnel within 15s")
	}
	return nil, nil
}

func get(c *tunnel.Conn, path string) (*http.Response, error) {
	req, _ := http.NewRequest("GET", "http://app"+path, nil)
	return c.RoundTrip(req)
}

func summaryOf(t *testing.T, r invokeResult) serve.Summary {
	t.Helper()
	if r.err != nil || r.res.FunctionError != "" {
		t.Fatalf("invocation failed: %v %s %s", r.err, r.res.FunctionError, r.res.Payload)
	}
	var s serve.Summary
	if err := json.Unmarshal(r.res.Payload, &s); err != nil {
		t.Fatalf("summary %s: %v", r.res.Payload, err)
	}
	return s
}

func waitResult(t *testing.T, done <-chan invokeResult) invokeResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("invocation did not end")
	}
	return invokeResult{}
}

// httpEvent builds a Function URL event for path.
func httpEvent(method, path, query string, headers map[string]string, cookies []string, body string) []byte {
	e := events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: path, RawQueryString: query, Headers: headers, Cookies: cookies, Body: body,
		RequestContext: events.LambdaFunctionURLRequestContext{
			DomainName: "abc.lambda-url.us-east-1.on.aws",
			HTTP:       events.LambdaFunctionURLRequestContextHTTPDescription{Method: method, Path: path, SourceIP: "203.0.113.9"},
		},
	}
	b, _ := json.Marshal(e)
	return b
}

func TestManyRequestsInOneInvocation(t *testing.T) {
	// CPU admission off: this test is about the tunnel carrying 50 streams
	// in one invocation. Under -race on a busy machine each stream's own
	// CPU grows to several ms, and admission rightly nacks the last few
	// (they would queue behind the CPU); its own tests judge that.
	fn := goFunction("app", 30*time.Second, map[string]string{
		"FERRY_IDLE_LINGER": "100ms", "FERRY_MAX_CONCURRENCY": "64", "FERRY_CPU_ADMISSION": "off"})
	// One vCPU: 50 streams through the tunnel, the proxy and the app cost
	// CPU of their own, which a 512 MB sandbox's 0.29 vCPU stretches.
	fn.MemoryMB = 1769
	emu := newEmulator(t, fn)
	router := newTestRouter(t)

	// A single request in its own (direct) invocation, warm, for comparison.
	if res, err := emu.Invoke(context.Background(), "app", httpEvent("GET", "/healthz", "", nil, nil, ""), ""); err != nil || res.FunctionError != "" {
		t.Fatalf("warm-up: %v %s", err, res.Payload)
	}
	before, _ := emu.Stats("app")
	if res, err := emu.Invoke(context.Background(), "app", httpEvent("GET", "/work", "wait_ms=200", nil, nil, ""), ""); err != nil || res.FunctionError != "" {
		t.Fatalf("single request: %v %s", err, res.Payload)
	}
	mid, _ := emu.Stats("app")
	single := mid.BilledMs - before.BilledMs

	c, done := router.dialBack(t, emu, "app", 64)
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range 50 {
		wg.Go(func() {
			resp, err := get(c, "/work?wait_ms=200")
			if err != nil {
				t.Errorf("request: %v", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"wait_ms":200`)) {
				t.Errorf("response %d %s", resp.StatusCode, b)
				return
			}
			if resp.Header.Get(tunnel.HeaderLoad) == "" {
				t.Errorf("response lacks %s", tunnel.HeaderLoad)
			}
			ok.Add(1)
		})
	}
	wg.Wait()
	sum := summaryOf(t, waitResult(t, done))
	after, _ := emu.Stats("app")

	if ok.Load() != 50 || sum.Requests != 50 {
		t.Errorf("succeeded %d, summary %+v; want all 50 in the invocation", ok.Load(), sum)
	}
	if got := after.Invocations - mid.Invocations; got != 1 {
		t.Errorf("invocations = %d, want 1", got)
	}
	tunnelBilled := after.BilledMs - mid.BilledMs
	t.Logf("single request billed %d ms; 50 requests in one invocation billed %d ms (ended %s)", single, tunnelBilled, sum.Ended)
	// Run together, the 50 bill about one request's wait plus the linger
	// and the tunnel's setup; in series (or 8 at a time) they would bill
	// 50 (or 7) waits. The bound leaves room for -race on a busy machine,
	// which stretches the streams' own CPU: speed is make bench's to judge.
	if tunnelBilled >= 5*single {
		t.Errorf("50 requests billed %d ms, want under 5x a single request's %d ms: they did not run together", tunnelBilled, single)
	}
	if sum.Ended != "idle" {
		t.Errorf("invocation ended %q, want idle", sum.Ended)
	}
}

// The router asks for the linger to the microsecond, 0 included: an
// instance asked for none ends as soon as its last request is answered,
// and says what it kept.
func TestRouterChosenLinger(t *testing.T) {
	emu := newEmulator(t, goFunction("app", 30*time.Second, nil))
	router := newTestRouter(t)
	for _, linger := range []time.Duration{0, 1500 * time.Microsecond} {
		c, done := router.dialBackLinger(t, emu, "app", 8, linger)
		resp, err := get(c, "/work?wait_ms=5")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		sum := summaryOf(t, waitResult(t, done))
		if sum.LingerUs != linger.Microseconds() || sum.Ended != "idle" || sum.Requests != 1 {
			t.Errorf("asked to linger %v: summary %+v; want linger_us %d, ended idle, 1 request", linger, sum, linger.Microseconds())
		}
		if sum.BusyUs < 5000 || sum.BusyUs/1000 != sum.BusyMs {
			t.Errorf("busy %d us, %d ms: want at least the app's 5 ms, in both units", sum.BusyUs, sum.BusyMs)
		}
	}
}

func TestStreamingReachesRouterBeforeAppFinishes(t *testing.T) {
	emu := newEmulator(t, goFunction("app", 30*time.Second, nil))
	c, done := newTestRouter(t).dialBack(t, emu, "app", 8)
	resp, err := get(c, "/stream?chunks=3&interval_ms=400")
	if err != nil {
		t.Fatal(err)
	}
	firstChunkBeforeLast(t, resp)
	summaryOf(t, waitResult(t, done))
}

// firstChunkBeforeLast reads a response to goapp's /stream?chunks=3 and
// fails the test unless its first chunk arrived before the app wrote its
// last: causal, not a timing threshold.
func firstChunkBeforeLast(t *testing.T, resp *http.Response) {
	t.Helper()
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	gotFirst := time.Now().UnixMilli()
	if err != nil || !strings.HasPrefix(first, "chunk 0") {
		t.Fatalf("first chunk %q, %v", first, err)
	}
	rest, _ := io.ReadAll(br)
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	var lastAt int64
	if len(lines) != 2 || func() error { _, err := fmt.Sscanf(lines[1], "chunk 2 at %d", &lastAt); return err }() != nil {
		t.Fatalf("rest of stream %q", rest)
	}
	if lastAt <= gotFirst {
		t.Errorf("first chunk arrived at %d, app wrote its last at %d: the response was buffered", gotFirst, lastAt)
	}
}

func TestDrainBeforeDeadlineLosesNothing(t *testing.T) {
	// Load up to the deadline: no CPU admission (at 128 MB, a sandbox's
	// 0.07 vCPU cannot take 8 tight loops and would rightly refuse them),
	// and a linger no gap between requests reaches.
	emu := newEmulator(t, goFunction("app", 3*time.Second, map[string]string{"FERRY_CPU_ADMISSION": "off", "FERRY_IDLE_LINGER": "1s"}))
	c, done := newTestRouter(t).dialBack(t, emu, "app", 16)

	var succeeded, nacked, unprocessed, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-c.Done():
					return
				default:
				}
				resp, err := get(c, "/work?wait_ms=50")
				switch {
				case tunnel.Unprocessed(err):
					unprocessed.Add(1)
					return
				case err != nil:
					select {
					case <-c.Done():
						return // the tunnel is gone; nothing was in flight
					default:
					}
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if _, ok := tunnel.IsNack(resp); ok {
					nacked.Add(1)
				} else if resp.StatusCode == 200 {
					succeeded.Add(1)
				} else {
					failed.Add(1)
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		})
	}
	r := waitResult(t, done)
	wg.Wait()
	sum := summaryOf(t, r)
	st, _ := emu.Stats("app")
	t.Logf("succeeded %d, nacked %d, unprocessed %d; summary %+v; billed %d ms of a 3000 ms timeout",
		succeeded.Load(), nacked.Load(), unprocessed.Load(), sum, st.BilledMs)
	if failed.Load() != 0 || succeeded.Load() == 0 {
		t.Errorf("failed %d, succeeded %d; want 0 failed", failed.Load(), succeeded.Load())
	}
	if sum.Ended != "deadline" {
		t.Errorf("ended %q, want deadline", sum.Ended)
	}
	if sum.Nacks != nacked.Load() {
		t.Errorf("bootstrap reported %d nacks, router saw %d", sum.Nacks, nacked.Load())
	}
	if st.BilledMs >= 3000 {
		t.Errorf("billed %d ms: the invocation ran into its timeout instead of draining", st.BilledMs)
	}
}

func TestDirectInvocation(t *testing.T) {
	emu := newEmulator(t, goFunction("app", 10*time.Second, nil))

	t.Run("function url: status, headers, cookies and body", func(t *testing.T) {
		ev := httpEvent("POST", "/echo", "status=201&cookie=a%3D1&cookie=b%3D2", map[string]string{"x-client": "t"}, []string{"session=s1", "theme=dark"}, "hello")
		res, err := emu.Invoke(context.Background(), "app", ev, "")
		if err != nil || res.FunctionError != "" {
			t.Fatalf("%v %s", err, res.Payload)
		}
		var out events.LambdaFunctionURLResponse
		json.Unmarshal(res.Payload, &out)
		if out.StatusCode != 201 || out.Headers["x-echo"] != "yes" || strings.Join(out.Cookies, ",") != "a=1,b=2" || out.IsBase64Encoded {
			t.Fatalf("response %+v", out)
		}
		var echo struct {
			Method, Path, Body, Host string
			Cookies                  map[string]string
			Headers                  map[string][]string
		}
		json.Unmarshal([]byte(out.Body), &echo)
		if echo.Method != "POST" || echo.Path != "/echo" || echo.Body != "hello" || echo.Cookies["theme"] != "dark" ||
			echo.Headers["X-Client"][0] != "t" || echo.Host != "abc.lambda-url.us-east-1.on.aws" {
			t.Errorf("app saw %+v", echo)
		}
	})

	t.Run("api gateway v2: binary body is base64", func(t *testing.T) {
		e := events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "$default", RawPath: "/binary",
			RequestContext: events.APIGatewayV2HTTPRequestContext{HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "GET", Path: "/binary"}}}
		ev, _ := json.Marshal(e)
		res, err := emu.Invoke(context.Background(), "app", ev, "")
		if err != nil || res.FunctionError != "" {
			t.Fatalf("%v %s", err, res.Payload)
		}
		var out events.APIGatewayV2HTTPResponse
		json.Unmarshal(res.Payload, &out)
		b, _ := base64.StdEncoding.DecodeString(out.Body)
		if out.StatusCode != 200 || !out.IsBase64Encoded || len(b) != 256 || b[255] != 255 || out.Headers["content-type"] != "application/octet-stream" {
			t.Errorf("response %+v (decoded %d bytes)", out, len(b))
		}
	})

	t.Run("rest v1: multi-value headers", func(t *testing.T) {
		e := events.APIGatewayProxyRequest{HTTPMethod: "GET", Path: "/echo",
			MultiValueQueryStringParameters: map[string][]string{"cookie": {"x=1", "y=2"}}}
		ev, _ := json.Marshal(e)
		res, _ := emu.Invoke(context.Background(), "app", ev, "")
		var out events.APIGatewayProxyResponse
		json.Unmarshal(res.Payload, &out)
		if out.StatusCode != 200 || strings.Join(out.MultiValueHeaders["Set-Cookie"], ",") != "x=1,y=2" {
			t.Errorf("response %+v", out)
		}
	})

	t.Run("alb: status description", func(t *testing.T) {
		e := events.ALBTargetGroupRequest{HTTPMethod: "GET", Path: "/echo", QueryStringParameters: map[string]string{"status": "404"},
			RequestContext: events.ALBTargetGroupRequestContext{ELB: events.ELBContext{TargetGroupArn: "arn:tg"}}}
		ev, _ := json.Marshal(e)
		res, _ := emu.Invoke(context.Background(), "app", ev, "")
		var out events.ALBTargetGroupResponse
		json.Unmarshal(res.Payload, &out)
		if out.StatusCode != 404 || out.StatusDescription != "404 Not Found" || out.Headers["x-echo"] != "yes" {
			t.Errorf("response %+v", out)
		}
	})

	t.Run("unknown event is a function error", func(t *testing.T) {
		res, _ := emu.Invoke(context.Background(), "app", []byte(`{"hello":"world"}`), "")
		if res.FunctionError == "" || !bytes.Contains(res.Payload, []byte("Ferry.UnsupportedEvent")) {
			t.Errorf("result %s %s", res.FunctionError, res.Payload)
		}
	})
}

func TestExecWrapperRunsNodeApp(t *testing.T) {
	nodeDir, _ := filepath.Abs("../examples/nodeapp")
	emu := newEmulator(t, lambdaemu.Function{
		Name: "node", CodeDir: nodeDir, Layers: []string{layerDir}, Runtime: "nodejs22.x", Handler: "index.handler",
		Env: map[string]string{"AWS_LAMBDA_EXEC_WRAPPER": "/opt/ferry-exec-wrapper"}, Timeout: lambdaemu.Duration{Duration: 10 * time.Second},
	})
	res, err := emu.Invoke(context.Background(), "node", httpEvent("GET", "/echo", "cookie=n%3D1", nil, nil, ""), "")
	if err != nil || res.FunctionError != "" {
		t.Fatalf("%v %s", err, res.Payload)
	}
	var out events.LambdaFunctionURLResponse
	json.Unmarshal(res.Payload, &out)
	if out.StatusCode != 200 || out.Headers["x-echo"] != "yes" || len(out.Cookies) != 1 {
		t.Errorf("response %+v", out)
	}
}

// Each invocation reports the CPU its sandbox used: a direct one in the
// CPU line of its log, a tunnel one in its summary and its log. The
// figure holds the app's burns and agrees with the emulator's own reading
// of the sandbox's cgroup.
func TestCPUReported(t *testing.T) {
	fn := goFunction("app", 30*time.Second, nil)
	fn.MemoryMB = 1769
	emu := newEmulator(t, fn)
	router := newTestRouter(t)
	if res, err := emu.Invoke(context.Background(), "app", httpEvent("GET", "/healthz", "", nil, nil, ""), ""); err != nil || res.FunctionError != "" {
		t.Fatalf("warm-up: %v %s", err, res.Payload)
	}
	// agrees checks a reported figure against the burns it must hold and
	// the emulator's reading over the same invocation (which also holds
	// the runtime's calls on either side of the bootstrap's).
	agrees := func(what string, reported, burned time.Duration, before lambdaemu.Stats) {
		t.Helper()
		after, _ := emu.Stats("app")
		emuCPU := time.Duration(after.CPUUs-before.CPUUs) * time.Microsecond
		t.Logf("%s: reported %v, app burned %v, emulator read %v", what, reported, burned, emuCPU)
		if reported < burned-10*time.Millisecond { // a tick, where no cgroup is visible
			t.Errorf("%s: reported %v of CPU, less than the app's burns of %v", what, reported, burned)
		}
		if emuCPU == 0 {
			t.Logf("%s: the emulator runs sandboxes without cgroups here; no reading to compare", what)
			return
		}
		if reported > emuCPU+2*time.Millisecond || reported < emuCPU*8/10-5*time.Millisecond {
			t.Errorf("%s: reported %v, the emulator read %v from the sandbox's cgroup", what, reported, emuCPU)
		}
	}

	before, _ := emu.Stats("app")
	res, err := emu.Invoke(context.Background(), "app", httpEvent("GET", "/work", "cpu_ms=60", nil, nil, ""), "")
	if err != nil || res.FunctionError != "" {
		t.Fatalf("direct: %v %s", err, res.Payload)
	}
	cpu, ok := dialback.CPUFromLog(res.LogTail, res.RequestID)
	if !ok {
		t.Fatalf("direct: no CPU line for %s in the log tail:\n%s", res.RequestID, res.LogTail)
	}
	agrees("direct", cpu, 60*time.Millisecond, before)

	before, _ = emu.Stats("app")
	c, done := router.dialBack(t, emu, "app", 8)
	// One after another: CPU admission may rightly refuse a second burn
	// beside the first.
	for range 3 {
		resp, err := get(c, "/work?cpu_ms=40&wait_ms=20")
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request answered %d", resp.StatusCode)
		}
	}
	r := waitResult(t, done)
	sum := summaryOf(t, r)
	logged, ok := dialback.CPUFromLog(r.res.LogTail, r.res.RequestID)
	if !ok || logged.Microseconds() != sum.CPUUs {
		t.Errorf("tunnel: log says %v (found %v), summary %d us; want the same figure in both", logged, ok, sum.CPUUs)
	}
	agrees("tunnel", time.Duration(sum.CPUUs)*time.Microsecond, 120*time.Millisecond, before)
}

// An app's work after its answer (waitUntil, through the loopback API at
// FERRY_BACKGROUND_URL) does not hold the answer back, and keeps the
// invocation going until it is done: a tunnel one past its idle linger, a
// direct one until the runtime asks for the next event. Work past the
// deadline is cut at the drain.
func TestWorkAfterTheAnswer(t *testing.T) {
	fn := goFunction("app", 3*time.Second, nil)
	emu := newEmulator(t, fn)
	router := newTestRouter(t)
	invoke := func(path, query string) string {
		t.Helper()
		res, err := emu.Invoke(context.Background(), "app", httpEvent("GET", path, query, nil, nil, ""), "")
		if err != nil || res.FunctionError != "" {
			t.Fatalf("%s?%s: %v %s", path, query, err, res.Payload)
		}
		var out events.LambdaFunctionURLResponse
		json.Unmarshal(res.Payload, &out)
		return out.Body
	}

	// Direct: the next invocation starts only after the work is done.
	if body := invoke("/after", "ms=300"); !strings.Contains(body, `"background_ms":300`) {
		t.Fatalf("GET /after: %s", body)
	}
	if body := invoke("/after/done", ""); !strings.Contains(body, `"done":1`) {
		t.Errorf("after a direct invocation's work: %s, want it done before the next invocation", body)
	}

	// Tunnel: the answer comes at once; the invocation outlives its 50 ms
	// linger while the work is held, and ends once it is done.
	c, done := router.dialBackLinger(t, emu, "app", 8, 50*time.Millisecond)
	tget := func(path string) string {
		t.Helper()
		resp, err := get(c, path)
		if err != nil {
			t.Fatalf("GET %s over the tunnel: %v (did the invocation end under pending work?)", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	tget("/after?until=release")
	time.Sleep(300 * time.Millisecond) // six lingers with nothing in flight but the work
	if b := tget("/after/done"); !strings.Contains(b, `"done":1`) {
		t.Errorf("while the work is held: %s, want only the direct invocation's done", b)
	}
	tget("/after/release")
	sum := summaryOf(t, waitResult(t, done))
	if sum.Ended != "idle" || sum.BackgroundUs < 250_000 {
		t.Errorf("summary %+v: want an idle end once the work was done, after 300 ms or more of it alone", sum)
	}
	if body := invoke("/after/done", ""); !strings.Contains(body, `"done":2`) {
		t.Errorf("after the tunnel invocation: %s, want its work done", body)
	}

	// Work that would outlast the deadline is cut at the drain: the
	// invocation still ends in time.
	start := time.Now()
	invoke("/after", "ms=10000")
	invoke("/healthz", "")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("work past a 3 s deadline held the sandbox %v", took)
	}
}
