package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
)

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
		// The app notes each POST /work as it takes it (GOAPP_LEDGER). A
		// POST, not a GET: Go's HTTP client resends an idempotent request
		// whose kept-alive connection broke, as HTTP allows.
		ledger := filepath.Join(t.TempDir(), "ran")
		emu := newEmulator(t, goFunction("crashy", 30*time.Second, map[string]string{"GOAPP_ALLOW_CRASH": "1", "FERRY_IDLE_LINGER": "2s", "GOAPP_LEDGER": ledger}))
		c, done := newTestRouter(t).dialBack(t, emu, "crashy", 8)
		slow := make(chan int, 1)
		var slowBody []byte
		go func() {
			req, _ := http.NewRequest("POST", "http://app/work?wait_ms=3000&id=slow", nil)
			resp, err := c.RoundTrip(req)
			if err != nil {
				slow <- -1
				return
			}
			slowBody, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			slow <- resp.StatusCode
		}()
		// The app has the slow request (it then waits 3 s).
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if b, _ := os.ReadFile(ledger); bytes.Contains(b, []byte("slow\n")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the app never took the slow request")
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
	// serve.WaitUntil: the work after the answer is done before the next
	// invocation begins.
	for _, c := range []struct{ path, want string }{{"/later", "answered; the rest follows\n"}, {"/later/done", "1\n"}} {
		res, err := emu.Invoke(context.Background(), "inproc", httpEvent("GET", c.path, "", nil, nil, ""), "")
		var out events.LambdaFunctionURLResponse
		if err == nil {
			json.Unmarshal(res.Payload, &out)
		}
		if err != nil || out.Body != c.want {
			t.Errorf("GET %s: %v %q, want %q", c.path, err, out.Body, c.want)
		}
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

	// A WebSocket over the tunnel reaches the in-process handler: the
	// stream the router would open, with a frame written by hand.
	c, done = newTestRouter(t).dialBack(t, emu, "inproc", 8)
	toApp, body := io.Pipe()
	req, _ := http.NewRequest("GET", "http://instance/ws", toApp)
	req.Header.Set(tunnel.HeaderUpgrade, "websocket")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get(tunnel.HeaderUpgradeStatus) != "101" || resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("upgrade answered %d %v, want the handler's 101 (RFC 6455's example accept)", resp.StatusCode, resp.Header)
	}
	mask := []byte{1, 2, 3, 4}
	frame := []byte{0x81, 0x80 | 2, mask[0], mask[1], mask[2], mask[3], 'h' ^ mask[0], 'i' ^ mask[1]} // a client's text frame "hi"
	if _, err := body.Write(frame); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, echo); err != nil || string(echo) != "\x81\x02hi" {
		t.Errorf("echo frame % x, %v; want a text frame \"hi\"", echo, err)
	}
	body.Close()
	resp.Body.Close()
	if sum := summaryOf(t, waitResult(t, done)); sum.Requests != 1 {
		t.Errorf("summary %+v, want the socket as 1 request", sum)
	}
}
