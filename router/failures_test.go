package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrun/ferry/localstack/lambdaemu"
	"github.com/ferryrun/ferry/router/pool"
)

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

// TestUnreadyWhileLambdaFails: when every call to the Lambda API fails
// (here nothing answers at its address), /readyz says so, and health
// checks move traffic to another region; with no more failures it is
// ready again, for traffic to try.
func TestUnreadyWhileLambdaFails(t *testing.T) {
	s := startStack(t, stackOpts{routerEnv: map[string]string{
		"FERRY_ROUTER_UNREADY_AFTER": "1s", "FERRY_ROUTER_QUEUE_TIMEOUT": "3s",
		"AWS_ENDPOINT_URL_LAMBDA": "http://" + freeAddr(t), // nothing listens
	}})
	done := make(chan reply, 1)
	go func() { done <- s.get("/work") }()
	readyz := func() (int, string) {
		resp, err := http.Get(s.admin + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	await := func(want int, within time.Duration) string {
		t.Helper()
		for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
			code, body := readyz()
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz answered %d %q, want %d within %v", code, body, want, within)
			}
		}
	}
	if body := await(http.StatusServiceUnavailable, 8*time.Second); !strings.Contains(body, "Lambda API") {
		t.Errorf("/readyz said %q; want it to name the Lambda API", body)
	}
	if r := <-done; r.status != http.StatusServiceUnavailable && r.status != http.StatusBadGateway {
		t.Errorf("the request got %d %q; want a clear 503 or 502", r.status, r.body)
	}
	await(http.StatusOK, 20*time.Second)
}
