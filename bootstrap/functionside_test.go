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
	"slices"
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
	tok, _, err := r.issuer.Mint(function)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := dialback.Marshal(dialback.Payload{Router: r.addr, Token: tok, Pin: r.pin, Function: function, MaxConcurrency: maxConc}.WithLinger(linger))
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
	fn := goFunction("app", 30*time.Second, map[string]string{"FERRY_IDLE_LINGER": "100ms", "FERRY_MAX_CONCURRENCY": "64"})
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
	if tunnelBilled >= 2*single {
		t.Errorf("50 requests billed %d ms, want under 2x a single request's %d ms", tunnelBilled, single)
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
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	gotFirst := time.Now().UnixMilli()
	if err != nil || !strings.HasPrefix(first, "chunk 0") {
		t.Fatalf("first chunk %q, %v", first, err)
	}
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	var lastAt int64
	if len(lines) != 2 || func() error { _, err := fmt.Sscanf(lines[1], "chunk 2 at %d", &lastAt); return err }() != nil {
		t.Fatalf("rest of stream %q", rest)
	}
	// Causal, not a timing threshold: the app wrote its last chunk after we
	// already held the first one.
	if lastAt <= gotFirst {
		t.Errorf("first chunk arrived at %d, app wrote its last at %d: the response was buffered", gotFirst, lastAt)
	}
	summaryOf(t, waitResult(t, done))
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

func TestAppFailures(t *testing.T) {
	t.Run("app that cannot start is an init error", func(t *testing.T) {
		emu := newEmulator(t, goFunction("bad", 10*time.Second, map[string]string{"FERRY_APP_CMD": "echo starting; exit 3"}))
		res, err := emu.Invoke(context.Background(), "bad", httpEvent("GET", "/", "", nil, nil, ""), "")
		if err != nil || res.FunctionError == "" || !bytes.Contains(res.Payload, []byte("Ferry.AppStartFailed")) {
			t.Errorf("result %v %s %s", err, res.FunctionError, res.Payload)
		}
	})

	t.Run("bad configuration names the variable", func(t *testing.T) {
		emu := newEmulator(t, goFunction("badcfg", 10*time.Second, map[string]string{"FERRY_MAX_CONCURRENCY": "lots"}))
		res, _ := emu.Invoke(context.Background(), "badcfg", httpEvent("GET", "/", "", nil, nil, ""), "")
		if !bytes.Contains(res.Payload, []byte("FERRY_MAX_CONCURRENCY")) {
			t.Errorf("result %s %s", res.FunctionError, res.Payload)
		}
	})

	t.Run("app that dies: in-flight gets 502, next request restarts it", func(t *testing.T) {
		emu := newEmulator(t, goFunction("crashy", 30*time.Second, map[string]string{"GOAPP_ALLOW_CRASH": "1", "FERRY_IDLE_LINGER": "2s"}))
		c, done := newTestRouter(t).dialBack(t, emu, "crashy", 8)
		slow := make(chan int, 1)
		var slowBody []byte
		go func() {
			resp, err := get(c, "/work?wait_ms=3000")
			if err != nil {
				slow <- -1
				return
			}
			slowBody, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			slow <- resp.StatusCode
		}()
		// The slow request is in flight, ahead of the crash on the same
		// path to the app (it then waits 3 s there).
		for deadline := time.Now().Add(5 * time.Second); c.InFlight() < 1; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the slow request never went in flight")
			}
		}
		req, _ := http.NewRequest("POST", "http://app/crash", nil)
		if resp, err := c.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
		if got := <-slow; got != http.StatusBadGateway {
			t.Errorf("in-flight request when the app died: status %d, want 502", got)
		}
		// What happened, for the client; the error's own text (the app's
		// address, its exit status) only in the log.
		if !bytes.HasPrefix(slowBody, []byte("ferry: the app did not complete this request")) ||
			bytes.Contains(slowBody, []byte("127.0.0.1")) || bytes.Contains(slowBody, []byte("exit status")) || bytes.Contains(slowBody, []byte("EOF")) {
			t.Errorf("502 body %q: want what happened, without internal error text", slowBody)
		}
		resp, err := get(c, "/work")
		if err != nil {
			t.Fatalf("request after the crash: %v", err)
		}
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("request after the crash: %d %s", resp.StatusCode, b)
		}
		resp.Body.Close()
		summaryOf(t, waitResult(t, done))
	})

	// The app's process ends but the command that ran it lingers (sh
	// sleeps on): the port refuses while the supervisor cannot yet tell
	// the app is gone. A request in that window never reached the app: it
	// is sent again, body and all, once the app is back (it once failed,
	// its body closed by the first try), or refused for another instance
	// (it once got a 502). Never a 502. Linux may also close a dying
	// app's connections before its port (its files are released last
	// opened first), so a request can connect and then be reset unseen:
	// that app is played by /crash?port_lingers_ms (it once got a 502).
	for _, tc := range []struct {
		name, sleep, crash string
		want               []int
	}{
		{"request with a body after the app died is sent again", "0.05", "/crash", []int{200, 503}},
		{"app not accepting: the request is refused, not failed", "5", "/crash", []int{503}},
		{"app whose port outlives its connections: refused, not failed", "5", "/crash?port_lingers_ms=2000", []int{503}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu := newEmulator(t, goFunction("crashy", 30*time.Second, map[string]string{"GOAPP_ALLOW_CRASH": "1",
				"FERRY_IDLE_LINGER": "2s", "FERRY_APP_CMD": filepath.Join(goappDir, "goapp") + "; sleep " + tc.sleep}))
			c, done := newTestRouter(t).dialBack(t, emu, "crashy", 8)
			req, _ := http.NewRequest("POST", "http://app"+tc.crash, nil)
			if resp, err := c.RoundTrip(req); err == nil {
				resp.Body.Close()
			}
			req, _ = http.NewRequest("POST", "http://app/echo", strings.NewReader("the body"))
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatalf("request after the crash: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case !slices.Contains(tc.want, resp.StatusCode):
				t.Errorf("request after the crash: %d %s; want one of %v", resp.StatusCode, b, tc.want)
			case resp.StatusCode == 200 && !bytes.Contains(b, []byte(`"body":"the body"`)):
				t.Errorf("sent again without its body: %s", b)
			case resp.StatusCode == 503:
				if reason, ok := tunnel.IsNack(resp); !ok || reason != tunnel.NackAppUnreachable {
					t.Errorf("503 that is not ferry's nack (%q): %s", reason, b)
				}
			}
			summaryOf(t, waitResult(t, done))
		})
	}
}

// TestAppFreezesAndDiesWithItsSandbox checks the app process is part of the
// sandbox: stopped between invocations like Lambda's frozen VM, and gone
// when the sandbox ends. (sh forks the app, so this depends on the app
// staying in the sandbox's process group.)
func TestAppFreezesAndDiesWithItsSandbox(t *testing.T) {
	emu, err := lambdaemu.New(lambdaemu.Config{Functions: []lambdaemu.Function{goFunction("app", 10*time.Second, nil)}}, lambdaemu.Options{FunctionLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	res, err := emu.Invoke(context.Background(), "app", httpEvent("GET", "/work", "", nil, nil, ""), "")
	if err != nil || res.FunctionError != "" {
		t.Fatalf("%v %s", err, res.Payload)
	}
	var out events.LambdaFunctionURLResponse
	json.Unmarshal(res.Payload, &out)
	var work struct{ PID int }
	if json.Unmarshal([]byte(out.Body), &work); work.PID == 0 {
		t.Fatalf("no app pid in %q", out.Body)
	}
	state := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", work.PID))
		if err != nil {
			return "gone"
		}
		s := string(b)
		return s[strings.LastIndexByte(s, ')')+2:][:1]
	}
	// Frozen by the cgroup freezer (D) where the emulator has cgroups,
	// else stopped by SIGSTOP (T).
	want := "T"
	if emu.Limited() {
		want = "D"
	}
	for deadline := time.Now().Add(2 * time.Second); state() != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("app state %q between invocations, want %s (frozen with its sandbox)", state(), want)
		}
	}
	emu.Close()
	for deadline := time.Now().Add(2 * time.Second); state() != "gone" && state() != "Z"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("app pid %d still %q after its sandbox ended", work.PID, state())
		}
	}
}

// A panicking handler in in-process mode fails its invocation, as
// aws-lambda-go reports a panic, and the runtime serves the next one in
// the same sandbox (it once died with the panic).
func TestHandlerPanicIsAnInvocationError(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(goappDir, "goapp"), filepath.Join(dir, "bootstrap")); err != nil {
		t.Fatal(err)
	}
	emu := newEmulator(t, lambdaemu.Function{Name: "panicky", CodeDir: dir, Runtime: "provided.al2023", MemoryMB: 1769,
		Timeout: lambdaemu.Duration{Duration: 10 * time.Second}, Env: map[string]string{"GOAPP_IN_PROCESS": "1", "GOAPP_ALLOW_CRASH": "1"}})
	res, err := emu.Invoke(context.Background(), "panicky", httpEvent("POST", "/panic", "", nil, nil, ""), "")
	if err != nil || res.FunctionError == "" || !bytes.Contains(res.Payload, []byte("Ferry.HandlerPanic")) {
		t.Fatalf("panicking handler: %v, function error %q, %s; want a Ferry.HandlerPanic error", err, res.FunctionError, res.Payload)
	}
	res, err = emu.Invoke(context.Background(), "panicky", httpEvent("GET", "/healthz", "", nil, nil, ""), "")
	var out events.LambdaFunctionURLResponse
	json.Unmarshal(res.Payload, &out)
	if err != nil || res.FunctionError != "" || out.StatusCode != 200 {
		t.Fatalf("after the panic: %v %q %s", err, res.FunctionError, res.Payload)
	}
	if st, _ := emu.Stats("panicky"); st.SandboxesStarted != 1 {
		t.Errorf("%d sandboxes started: the runtime died with the panic", st.SandboxesStarted)
	}
}

// TestInProcessGoHandler runs examples/inprocess, a Go program built around
// serve.Start, as the function's own bootstrap (no layer, no app process):
// a direct event and a dial-back both reach its handler, and it logs at
// FERRY_LOG_LEVEL (it once ignored it).
func TestInProcessGoHandler(t *testing.T) {
	dir := t.TempDir()
	bins, err := testbin.Build(dir, "./examples/inprocess")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bins[0], filepath.Join(dir, "bootstrap")); err != nil {
		t.Fatal(err)
	}
	// One vCPU (1769 MB): eight 100 ms waits fit beside each other. At the
	// default 128 MB (0.07 vCPU) admission would turn the eighth away.
	emu := newEmulator(t, lambdaemu.Function{Name: "inproc", CodeDir: dir, Runtime: "provided.al2023", MemoryMB: 1769,
		Timeout: lambdaemu.Duration{Duration: 10 * time.Second}, Env: map[string]string{"FERRY_IDLE_LINGER": "300ms", "FERRY_LOG_LEVEL": "warn"}})

	res, err := emu.Invoke(context.Background(), "inproc", httpEvent("GET", "/hello", "name=go", nil, nil, ""), "")
	if err != nil || res.FunctionError != "" {
		t.Fatalf("%v %s", err, res.Payload)
	}
	var out events.LambdaFunctionURLResponse
	json.Unmarshal(res.Payload, &out)
	if out.StatusCode != 200 || out.Body != "hello, go, from one process\n" {
		t.Errorf("direct: %+v", out)
	}

	c, done := newTestRouter(t).dialBack(t, emu, "inproc", 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, err := get(c, "/slow")
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "done\n" {
				t.Errorf("tunnel: %d %q", resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	res2 := waitResult(t, done)
	if sum := summaryOf(t, res2); sum.Requests != 8 {
		t.Errorf("summary %+v, want 8 requests", sum)
	}
	// At info it logs "tunnel invocation done"; at warn, nothing here.
	if strings.Contains(res2.res.LogTail, `"level":"INFO"`) {
		t.Errorf("FERRY_LOG_LEVEL=warn, yet the in-process runtime logged at info:\n%s", res2.res.LogTail)
	}
}

// TestCPUAdmission: over a real tunnel into the real bootstrap and app,
// an instance running a CPU-bound request refuses a second one (a cpu
// nack, its load hint full) once it has learnt what the kind costs; it
// takes a request whose CPU is too small to matter; and it takes a CPU-bound
// one marked as the router's last try.
func TestCPUAdmission(t *testing.T) {
	// A budget of 0.1% (so the 1 ms floor rules): how much a busy test
	// machine stretches the requests' wall time, which the budget is a
	// share of, cannot then decide the outcome.
	fn := goFunction("app", 30*time.Second, map[string]string{"FERRY_IDLE_LINGER": "5s", "FERRY_CPU_BUDGET": "0.001"})
	fn.MemoryMB = 1769 // one vCPU
	emu := newEmulator(t, fn)
	c, done := newTestRouter(t).dialBack(t, emu, "app", 8)

	// Teach it: /work burns 150 ms of CPU.
	resp, err := get(c, "/work?cpu_ms=150")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	resp.Body.Close()
	if l, ok := c.Load(); !ok || l.InFlight != 0 || l.Full {
		t.Errorf("load after a lone request = %+v, %v; want 0 in flight, not full", l, ok)
	}

	// A long CPU-bound request holds the vCPU (sent as a last try, so that
	// it is taken even if one of the probes below got there first).
	long := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://app/work?cpu_ms=1500", nil)
		req.Header.Set(tunnel.HeaderLastTry, "1")
		resp, err := c.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		long <- err
	}()
	// Until it ends, another CPU-bound request is refused for CPU.
	nacked := false
	for !nacked {
		select {
		case err := <-long:
			t.Fatalf("the long request ended (%v) and no second CPU-bound request was refused beside it", err)
		default:
		}
		resp, err := get(c, "/work?cpu_ms=150&second=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		reason, isNack := tunnel.IsNack(resp)
		if !isNack {
			continue // taken: the long one had not reached the app yet
		}
		nacked = true
		if reason != tunnel.NackCPU {
			t.Errorf("nack reason %q, want %q", reason, tunnel.NackCPU)
		}
		if l, err := tunnel.ParseLoad(resp.Header.Get(tunnel.HeaderLoad)); err != nil || !l.Full || l.InFlight < 1 {
			t.Errorf("nack's load hint %+v (%v), want full with the CPU-bound request in flight", l, err)
		}
	}
	// A request with next to no CPU still fits beside it.
	if resp, err := get(c, "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("a health check beside the CPU-bound request: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The router's last try is taken whatever it costs.
	req, _ := http.NewRequest("GET", "http://app/work?cpu_ms=20", nil)
	req.Header.Set(tunnel.HeaderLastTry, "1")
	if resp, err := c.RoundTrip(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("last try: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if err := <-long; err != nil {
		t.Errorf("the long request: %v", err)
	}
	c.Shutdown(context.Background())
	sum := summaryOf(t, waitResult(t, done))
	if sum.Nacks < 1 {
		t.Errorf("summary %+v, want the nack counted", sum)
	}
}
