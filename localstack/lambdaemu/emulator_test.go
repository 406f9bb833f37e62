package lambdaemu_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
)

// echoDir holds the aws-lambda-go echo function built as "bootstrap".
var echoDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "emu-test-")
	if err != nil {
		panic(err)
	}
	bins, err := testbin.Build(dir, "./localstack/testfunctions/echo")
	if err == nil {
		err = os.Rename(bins[0], filepath.Join(dir, "bootstrap"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	echoDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type harness struct {
	emu    *lambdaemu.Emulator
	url    string
	client *lambda.Client
	log    *bytes.Buffer
}

func start(t *testing.T, fns ...lambdaemu.Function) *harness {
	t.Helper()
	return startWith(t, lambdaemu.Options{}, fns...)
}

// startWith starts fns under an emulator with opts, its function log kept.
func startWith(t *testing.T, opts lambdaemu.Options, fns ...lambdaemu.Function) *harness {
	t.Helper()
	var logMu sync.Mutex
	logs := &bytes.Buffer{}
	opts.FunctionLog = lockedWriter{&logMu, logs}
	emu, err := lambdaemu.New(lambdaemu.Config{Functions: fns}, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(func() { srv.Close(); emu.Close() })
	client := lambda.New(lambda.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		Retryer:      aws.NopRetryer{},
	})
	return &harness{emu: emu, url: srv.URL, client: client, log: logs}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func echo(timeout time.Duration, concurrency int) lambdaemu.Function {
	return lambdaemu.Function{Name: "echo", CodeDir: echoDir, Timeout: lambdaemu.Duration{Duration: timeout}, Concurrency: concurrency}
}

func (h *harness) invoke(t *testing.T, payload string) (*lambda.InvokeOutput, error) {
	t.Helper()
	return h.client.Invoke(context.Background(), &lambda.InvokeInput{
		FunctionName: aws.String("echo"),
		Payload:      []byte(payload),
		LogType:      types.LogTypeTail,
	})
}

func TestAWSLambdaGoFunctionUnderEmulator(t *testing.T) {
	h := start(t, echo(time.Second, 2))

	t.Run("success returns the handler's result and a log tail", func(t *testing.T) {
		out, err := h.invoke(t, `{"print":"hello from the handler"}`)
		if err != nil {
			t.Fatal(err)
		}
		if out.FunctionError != nil {
			t.Fatalf("FunctionError = %q, payload %s", *out.FunctionError, out.Payload)
		}
		var r struct {
			RequestID   string `json:"request_id"`
			Function    string `json:"function"`
			HasDeadline bool   `json:"has_deadline"`
		}
		if err := json.Unmarshal(out.Payload, &r); err != nil {
			t.Fatalf("payload %s: %v", out.Payload, err)
		}
		if r.RequestID == "" || !strings.HasSuffix(r.Function, ":function:echo") || !r.HasDeadline {
			t.Errorf("handler saw %+v; want request id, function ARN and a deadline", r)
		}
		tail, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
		for _, want := range []string{"hello from the handler", "REPORT RequestId: " + r.RequestID, "Billed Duration:"} {
			if !strings.Contains(string(tail), want) {
				t.Errorf("log tail lacks %q:\n%s", want, tail)
			}
		}
	})

	t.Run("function error sets FunctionError", func(t *testing.T) {
		out, err := h.invoke(t, `{"fail":"boom"}`)
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.FunctionError) != "Unhandled" || !bytes.Contains(out.Payload, []byte("boom")) {
			t.Errorf("FunctionError = %q, payload %s; want Unhandled with boom", aws.ToString(out.FunctionError), out.Payload)
		}
	})

	t.Run("timeout kills the sandbox and answers like Lambda", func(t *testing.T) {
		before, _ := h.emu.Stats("echo")
		type answer struct {
			out *lambda.InvokeOutput
			err error
		}
		done := make(chan answer, 1)
		go func() { out, err := h.invoke(t, `{"sleep_ms":5000}`); done <- answer{out, err} }()
		// Under way, the invocation counts as running, and in no total yet.
		for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
			if st, _ := h.emu.Stats("echo"); st.Running == 1 && st.Invocations == before.Invocations {
				break
			}
			if time.Now().After(deadline) {
				st, _ := h.emu.Stats("echo")
				t.Fatalf("stats during an invocation = %+v, want running 1", st)
			}
		}
		a := <-done
		out, err := a.out, a.err
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.FunctionError) != "Unhandled" || !bytes.Contains(out.Payload, []byte("Task timed out after 1.00 seconds")) {
			t.Errorf("FunctionError = %q, payload %s; want a timeout", aws.ToString(out.FunctionError), out.Payload)
		}
		after, _ := h.emu.Stats("echo")
		if after.Running != 0 || after.Invocations != before.Invocations+1 {
			t.Errorf("stats after the invocation = %+v, want running 0 and one more invocation", after)
		}
		if got := after.BilledMs - before.BilledMs; got != 1000 {
			t.Errorf("billed %d ms for a 1s timeout, want 1000", got)
		}
		// The next invoke needs a new sandbox: the timed-out one was killed.
		if _, err := h.invoke(t, `{}`); err != nil {
			t.Fatal(err)
		}
		if st, _ := h.emu.Stats("echo"); st.SandboxesStarted != after.SandboxesStarted+1 {
			t.Errorf("sandboxes started %d -> %d, want one new sandbox after a timeout", after.SandboxesStarted, st.SandboxesStarted)
		}
	})

	t.Run("a runtime that exits after reporting a panic: the next invoke gets a new sandbox", func(t *testing.T) {
		out, err := h.invoke(t, `{"panic":"handler blew up"}`)
		if err != nil || aws.ToString(out.FunctionError) == "" || !bytes.Contains(out.Payload, []byte("handler blew up")) {
			t.Fatalf("panic: %v %q %s", err, aws.ToString(out.FunctionError), out.Payload)
		}
		before, _ := h.emu.Stats("echo")
		out, err = h.invoke(t, `{"print":"after the panic"}`)
		if err != nil || out.FunctionError != nil {
			t.Fatalf("the invoke after the panic: %v %s (it once got Runtime.ExitError from the dead sandbox)", err, out.Payload)
		}
		if st, _ := h.emu.Stats("echo"); st.SandboxesStarted != before.SandboxesStarted+1 {
			t.Errorf("sandboxes started %d -> %d, want one new sandbox", before.SandboxesStarted, st.SandboxesStarted)
		}
	})

	t.Run("over the concurrency limit is TooManyRequestsException", func(t *testing.T) {
		var wg sync.WaitGroup
		before, _ := h.emu.Stats("echo")
		for range 2 {
			wg.Go(func() { h.invoke(t, `{"sleep_ms":800}`) })
		}
		// Both under way: the third is one too many.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if st, _ := h.emu.Stats("echo"); st.Running == before.Running+2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the two invocations never ran at once")
			}
		}
		_, err := h.invoke(t, `{}`)
		wg.Wait()
		var tooMany *types.TooManyRequestsException
		if !errors.As(err, &tooMany) {
			t.Fatalf("err = %v, want *types.TooManyRequestsException", err)
		}
	})

	t.Run("unknown function is ResourceNotFoundException", func(t *testing.T) {
		_, err := h.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("nope")})
		var nf *types.ResourceNotFoundException
		if !errors.As(err, &nf) {
			t.Fatalf("err = %v, want *types.ResourceNotFoundException", err)
		}
	})

	t.Run("Event answers 202 and DryRun 204", func(t *testing.T) {
		for typ, want := range map[types.InvocationType]int32{types.InvocationTypeEvent: 202, types.InvocationTypeDryRun: 204} {
			out, err := h.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("echo"), InvocationType: typ})
			if err != nil || out.StatusCode != want {
				t.Errorf("%s: status %v, err %v; want %d", typ, out.StatusCode, err, want)
			}
		}
	})
}

func TestWarmSandboxIsReusedAndFrozen(t *testing.T) {
	h := start(t, echo(2*time.Second, 4))
	for range 3 {
		if _, err := h.invoke(t, `{}`); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := h.emu.Stats("echo")
	if st.Invocations != 3 || st.SandboxesStarted != 1 || st.ColdStarts != 1 {
		t.Errorf("stats = %+v; want 3 invocations on 1 sandbox with 1 cold start", st)
	}
	sbs := h.emu.Sandboxes()
	if len(sbs) != 1 {
		t.Fatalf("sandboxes = %+v, want 1", sbs)
	}
	// Between invocations the sandbox's processes are stopped: frozen by
	// the cgroup freezer (they sleep uninterruptibly, D) or, without one,
	// by SIGSTOP (T).
	want := "T"
	if h.emu.Limited() {
		want = "D"
	}
	deadline := time.Now().Add(2 * time.Second)
	for procState(sbs[0].PID) != want {
		if time.Now().After(deadline) {
			t.Fatalf("sandbox pid %d state %q, want %s (frozen)", sbs[0].PID, procState(sbs[0].PID), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

func TestInvokeAPIErrors(t *testing.T) {
	h := start(t, echo(time.Second, 1))
	cases := map[string]struct {
		header     http.Header
		body       []byte
		wantStatus int
		wantType   string
	}{
		"oversized payload":   {body: bytes.Repeat([]byte("x"), 6<<20+1), wantStatus: 413, wantType: "RequestTooLargeException"},
		"bad invocation type": {header: http.Header{"X-Amz-Invocation-Type": {"Sometimes"}}, body: []byte("{}"), wantStatus: 400, wantType: "InvalidParameterValueException"},
		"not JSON":            {body: []byte("hello"), wantStatus: 400, wantType: "InvalidRequestContentException"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", h.url+"/2015-03-31/functions/echo/invocations", bytes.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || resp.Header.Get("X-Amzn-Errortype") != tc.wantType {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"), tc.wantStatus, tc.wantType)
			}
			if resp.Header.Get("X-Amzn-Requestid") == "" {
				t.Error("error answer without a request id")
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	cases := map[string]lambdaemu.Function{
		"bad name":        {Name: "no spaces", CodeDir: echoDir},
		"missing code":    {Name: "f", CodeDir: "/does/not/exist"},
		"short timeout":   {Name: "f", CodeDir: echoDir, Timeout: lambdaemu.Duration{Duration: time.Millisecond}},
		"managed runtime": {Name: "f", CodeDir: echoDir, Runtime: "nodejs22.x"},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := lambdaemu.New(lambdaemu.Config{Functions: []lambdaemu.Function{f}}, lambdaemu.Options{}); err == nil {
				t.Error("New accepted an invalid function")
			}
		})
	}
}

// TestCloseRacesTheFreeze: Close right as the runtime asks for its next
// event, when the emulator freezes the sandbox. A process frozen by the
// cgroup freezer does not act on SIGKILL until thawed, so a freeze that
// lands after the kill's thaw used to leave the sandbox alive and Close
// waiting on it for ever.
func TestCloseRacesTheFreeze(t *testing.T) {
	for i := range 40 {
		emu, err := lambdaemu.New(lambdaemu.Config{Functions: []lambdaemu.Function{echo(10*time.Second, 1)}}, lambdaemu.Options{FunctionLog: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(emu.Handler())
		client := lambda.New(lambda.Options{
			Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
			Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""), Retryer: aws.NopRetryer{},
		})
		if _, err := client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{}`)}); err != nil {
			srv.Close()
			emu.Close()
			t.Fatal(err)
		}
		// The runtime is now between its response and its next /next:
		// close at a moment that moves across that window from round to
		// round.
		for start := time.Now(); time.Since(start) < time.Duration(i%15)*50*time.Microsecond; {
		}
		closed := make(chan error, 1)
		go func() { closed <- emu.Close() }()
		select {
		case <-closed:
		case <-time.After(8 * time.Second): // killAll gives up at 10s
			t.Fatalf("round %d: Close still waiting after 8s: a killed sandbox was frozen", i)
		}
		srv.Close()
	}
}
