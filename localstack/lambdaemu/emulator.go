package lambdaemu

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/ferryrun/ferry/internal/cgroup"

	"github.com/ferryrun/ferry/internal/lambdaarn"
)

const maxPayload = 6 << 20 // synchronous invoke payload limit, both ways

// Options configure an Emulator beyond its functions.
type Options struct {
	// Logger receives the emulator's own lines. If nil, slog.Default().
	Logger *slog.Logger
	// FunctionLog receives every line a sandbox prints and every REPORT
	// line, prefixed with the function and sandbox. If nil, os.Stderr.
	FunctionLog io.Writer
	// IdleTTL is how long a warm sandbox is kept idle. If zero, 10 minutes.
	IdleTTL time.Duration
	// Unlimited runs sandboxes without cgroup limits even where they could
	// be set. By default each sandbox gets memory_mb/1769 vCPU and
	// memory_mb of memory, as on Lambda, wherever cgroups can be written.
	Unlimited bool
}

// Emulator serves the Lambda Invoke API for its functions.
type Emulator struct {
	// static after New
	log       *slog.Logger
	region    string
	account   string
	functions map[string]*function
	tmp       string
	// cg makes each sandbox's cgroup; nil when sandboxes run unlimited.
	cg *cgroup.Manager
	// ports hands each sandbox's app a port of its own.
	ports *ports

	outMu sync.Mutex // serializes FunctionLog writes
	out   io.Writer

	stop chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// New validates cfg and returns an emulator. No sandbox starts until the
// first invoke. Close it to kill every sandbox.
func New(cfg Config, opts Options) (*Emulator, error) {
	e := &Emulator{
		log: opts.Logger, region: cfg.Region, account: cfg.Account, out: opts.FunctionLog,
		functions: map[string]*function{}, stop: make(chan struct{}), ports: hostPorts(),
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.out == nil {
		e.out = os.Stderr
	}
	if e.region == "" {
		e.region = "us-east-1"
	}
	if e.account == "" {
		e.account = "000000000000"
	}
	tmp, err := os.MkdirTemp("", "lambdaemu-")
	if err != nil {
		return nil, err
	}
	e.tmp = tmp
	for _, f := range cfg.Functions {
		if err := f.normalize(); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		if _, dup := e.functions[f.Name]; dup {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("function %s defined twice", f.Name)
		}
		opt, err := os.MkdirTemp(tmp, f.Name+"-opt-")
		if err == nil {
			err = mergeLayers(opt, f.Layers)
		}
		if err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("function %s: merging layers: %w", f.Name, err)
		}
		e.functions[f.Name] = &function{
			emu: e, cfg: f, optDir: opt, all: map[*sandbox]bool{},
			arn: fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", e.region, e.account, f.Name),
		}
	}
	if !opts.Unlimited {
		var suffix [4]byte
		rand.Read(suffix[:])
		m, err := cgroup.NewManager(fmt.Sprintf("lambdaemu-%d-%x", os.Getpid(), suffix))
		if err != nil {
			e.log.Warn("sandboxes run WITHOUT CPU and memory limits: their vCPU share (memory/1769) and memory are not enforced, so CPU-heavy work measures this machine, not Lambda", "err", err)
		} else {
			e.cg = m
			if n := m.ReapSiblings(staleGroup); n > 0 {
				e.log.Warn("removed sandbox cgroups left by emulators that died without closing, and killed what they held", "groups", n)
			}
		}
	}
	ttl := opts.IdleTTL
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	e.wg.Add(1)
	go e.reap(ttl)
	return e, nil
}

func (e *Emulator) reap(ttl time.Duration) {
	defer e.wg.Done()
	t := time.NewTicker(min(ttl/2, 10*time.Second))
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			for _, fn := range e.functions {
				fn.reapIdle(ttl)
			}
		}
	}
}

// Close kills every sandbox and removes the emulator's temporary files.
func (e *Emulator) Close() error {
	select {
	case <-e.stop:
		return nil
	default:
	}
	close(e.stop)
	e.wg.Wait()
	for _, fn := range e.functions {
		fn.killAll()
	}
	var err error
	if e.cg != nil {
		err = e.cg.Close()
	}
	return errors.Join(err, os.RemoveAll(e.tmp))
}

// Limited reports whether sandboxes run under cgroup CPU and memory limits.
func (e *Emulator) Limited() bool { return e.cg != nil }

// newGroup makes the cgroup of a sandbox of fn, or returns nil when
// sandboxes run unlimited. A failure is logged, and the sandbox runs
// without limits rather than not at all.
func (e *Emulator) newGroup(fn *function, sandbox string) *cgroup.Group {
	if e.cg == nil {
		return nil
	}
	g, err := e.cg.New(fn.cfg.Name+"-"+sandbox, cgroup.Limits{
		CPU: cgroup.LambdaCPU(fn.cfg.MemoryMB), MemoryBytes: int64(fn.cfg.MemoryMB) << 20,
	})
	if err != nil {
		e.log.Warn("sandbox runs without limits", "function", fn.cfg.Name, "sandbox", sandbox, "err", err)
		return nil
	}
	return g
}

// Handler serves the Invoke API at /2015-03-31/functions/{name}/invocations,
// and the emulator's own /_emulator/stats and /_emulator/sandboxes.
func (e *Emulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", e.handleInvoke)
	mux.HandleFunc("POST /2021-11-15/functions/{name}/response-streaming-invocations", e.handleInvokeStream)
	mux.HandleFunc("GET /_emulator/stats", e.handleStats)
	mux.HandleFunc("GET /_emulator/sandboxes", e.handleSandboxes)
	mux.HandleFunc("GET /_emulator/health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, http.StatusNotFound, "UnknownOperationException", "the emulator serves Invoke only: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// function resolves a name, partial ARN or ARN, with or without qualifier.
func (e *Emulator) function(ref string) (*function, bool) {
	if u, err := url.PathUnescape(ref); err == nil {
		ref = u
	}
	fn, ok := e.functions[lambdaarn.FunctionName(ref)]
	return fn, ok
}

// InvokeResult is what Invoke returns: the payload and Lambda's headers.
type InvokeResult struct {
	Status        int
	Payload       []byte
	FunctionError string // "", "Unhandled"
	RequestID     string
	LogTail       string // last 4 KB of the invocation's log, REPORT included
}

// Invoke runs one RequestResponse invocation of name with payload.
func (e *Emulator) Invoke(ctx context.Context, name string, payload []byte, clientContext string) (InvokeResult, error) {
	return e.InvokeStream(ctx, name, payload, clientContext, nil)
}

// InvokeStream is Invoke for InvokeWithResponseStream: a runtime that
// streams its response (Lambda-Runtime-Function-Response-Mode: streaming)
// has each piece handed to chunk as it arrives, and the result's Payload
// holds none of it. A runtime that answers at once, or an error, comes back
// in the result as from Invoke. chunk is given the invocation's request id;
// its error (a caller gone) drops the rest of the stream, as Lambda does.
func (e *Emulator) InvokeStream(ctx context.Context, name string, payload []byte, clientContext string, chunk func(requestID string, b []byte) error) (InvokeResult, error) {
	fn, ok := e.function(name)
	if !ok {
		return InvokeResult{}, errNotFound
	}
	inv := &invocation{
		id: newID(), payload: payload, clientContext: clientContext, timeout: fn.cfg.Timeout.Duration,
		result: make(chan result, 1), logs: newTailBuffer(4096),
	}
	if chunk != nil {
		inv.stream = func(b []byte) error { return chunk(inv.id, b) }
	}
	var sb *sandbox
	var cold bool
	var r result
	for attempt := 1; ; attempt++ {
		var err error
		sb, cold, err = fn.acquire(ctx)
		if err != nil {
			var ie *initError
			if errors.As(err, &ie) {
				fn.count(func(s *Stats) { s.Invocations++; s.Errors++ })
				return InvokeResult{Status: 200, RequestID: inv.id, FunctionError: "Unhandled", Payload: errorPayload(ie.Type, ie.Message)}, nil
			}
			return InvokeResult{}, err
		}
		fn.count(func(s *Stats) { s.Running++ })
		r = e.run(sb, inv)
		if !r.unstarted || attempt == 3 {
			break
		}
		// A runtime that exits after answering (aws-lambda-go does after
		// reporting a panic) dies idle; the invocation never reached it.
		// Lambda starts another sandbox for it, and so do we.
		fn.count(func(s *Stats) { s.Running-- })
		fn.release()
		e.logOut(fn.cfg.Name, sb.id, "runtime exited before it took invocation "+inv.id+"; starting another sandbox")
		inv = inv.again()
	}
	defer fn.release()
	sb.logs.settle()
	start := r.end
	if ns := inv.startNs.Load(); ns != 0 {
		start = time.Unix(0, ns)
	}
	dur := r.end.Sub(start)
	billed := int64(math.Ceil(float64(dur) / float64(time.Millisecond)))
	if billed < 1 {
		billed = 1
	}
	if billed > inv.timeout.Milliseconds() {
		billed = inv.timeout.Milliseconds()
	}
	report := fmt.Sprintf("REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\tMemory Size: %d MB\tMax Memory Used: %d MB",
		inv.id, float64(dur)/float64(time.Millisecond), billed, fn.cfg.MemoryMB, sb.memoryUsedMB())
	if cold {
		sb.mu.Lock()
		report += fmt.Sprintf("\tInit Duration: %.2f ms", float64(sb.initDur)/float64(time.Millisecond))
		sb.mu.Unlock()
	}
	e.logOut(fn.cfg.Name, sb.id, report)
	inv.logs.WriteString(report + "\n")
	fn.count(func(s *Stats) {
		s.Running--
		s.Invocations++
		s.BilledMs += billed
		s.DurationMs += dur.Milliseconds()
		s.ContendedUs += min(r.contended, dur).Microseconds()
		s.CPUUs += r.cpu.Microseconds()
		if cold {
			s.ColdStarts++
		}
		if r.funcError != "" {
			s.Errors++
		}
	})
	return InvokeResult{Status: 200, Payload: r.body, FunctionError: r.funcError, RequestID: inv.id, LogTail: inv.logs.String()}, nil
}

// run hands inv to sb and waits for its result (unstarted if the sandbox
// died before its runtime took the invocation).
func (e *Emulator) run(sb *sandbox, inv *invocation) (r result) {
	fn := sb.fn
	sb.next <- inv                                            // buffered; the sandbox's /next takes it
	timer := time.NewTimer(inv.timeout + 50*time.Millisecond) // runtime start slack
	defer timer.Stop()
	// A process of the sandbox killed for memory ends the sandbox, as on
	// Lambda; the kernel's kill may hit the app and spare the runtime, so
	// look while the invocation runs.
	var oomCheck <-chan time.Time
	if sb.cg != nil {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		oomCheck = t.C
	}
	for done := false; !done; {
		done = true
		select {
		case <-oomCheck:
			if !sb.outOfMemory() {
				done = false
				continue
			}
			sb.kill()
			<-sb.exited
			r = <-inv.result // wait() finished it as Runtime.OutOfMemory
		case r = <-inv.result:
			if sb.outOfMemory() {
				sb.kill()
				<-sb.exited
				r = result{funcError: "Unhandled", end: r.end, body: errorPayload("Runtime.OutOfMemory",
					fmt.Sprintf("RequestId: %s Error: Runtime exited with error: signal: killed", inv.id))}
			}
		case <-sb.exited:
			// The sandbox died with the invocation assigned; wait() has
			// finished it, unless it died before the handoff.
			select {
			case r = <-inv.result:
			default:
				r = result{funcError: "Unhandled", end: time.Now(), body: errorPayload("Runtime.ExitError",
					fmt.Sprintf("RequestId: %s Error: Runtime exited before the invocation started", inv.id))}
				r.unstarted = inv.startNs.Load() == 0
			}
		case <-timer.C:
			sb.kill()
			r = result{funcError: "Unhandled", end: time.Now(), body: errorPayload("Sandbox.Timedout",
				fmt.Sprintf("RequestId: %s Error: Task timed out after %.2f seconds", inv.id, inv.timeout.Seconds()))}
			e.logOut(fn.cfg.Name, sb.id, fmt.Sprintf("%s %s Task timed out after %.2f seconds", time.Now().UTC().Format(time.RFC3339Nano), inv.id, inv.timeout.Seconds()))
		}
	}
	return r
}

var errNotFound = errors.New("function not found")

func (e *Emulator) handleInvoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	fn, ok := e.function(name)
	if !ok {
		writeAPIError(w, http.StatusNotFound, "ResourceNotFoundException",
			fmt.Sprintf("Function not found: arn:aws:lambda:%s:%s:function:%s", e.region, e.account, lambdaarn.FunctionName(name)))
		return
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestContentException", "reading payload: "+err.Error())
		return
	}
	if len(payload) > maxPayload {
		writeAPIError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException",
			fmt.Sprintf("Request must be smaller than %d bytes for the InvokeFunction operation", maxPayload))
		return
	}
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	if !json.Valid(payload) {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestContentException",
			"Could not parse request body into json: the payload is not valid JSON")
		return
	}
	var cc string
	if h := r.Header.Get("X-Amz-Client-Context"); h != "" {
		b, err := base64.StdEncoding.DecodeString(h)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "InvalidRequestContentException", "X-Amz-Client-Context is not base64")
			return
		}
		cc = string(b)
	}
	w.Header().Set("X-Amz-Executed-Version", "$LATEST")
	switch t := r.Header.Get("X-Amz-Invocation-Type"); t {
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
		return
	case "Event":
		e.wg.Add(1)
		go e.invokeAsync(fn.cfg.Name, payload, cc)
		w.WriteHeader(http.StatusAccepted)
		return
	case "", "RequestResponse":
	default:
		writeAPIError(w, http.StatusBadRequest, "InvalidParameterValueException", "unknown X-Amz-Invocation-Type "+t)
		return
	}
	res, err := e.Invoke(r.Context(), fn.cfg.Name, payload, cc)
	switch {
	case errors.Is(err, errThrottled):
		writeAPIError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Rate Exceeded.",
			"Reason", "ReservedFunctionConcurrentInvocationLimitExceeded")
		return
	case err != nil:
		writeAPIError(w, http.StatusInternalServerError, "ServiceException", err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-Requestid", res.RequestID)
	if res.FunctionError != "" {
		h.Set("X-Amz-Function-Error", res.FunctionError)
	}
	if r.Header.Get("X-Amz-Log-Type") == "Tail" {
		h.Set("X-Amz-Log-Result", base64.StdEncoding.EncodeToString([]byte(res.LogTail)))
	}
	w.WriteHeader(res.Status)
	w.Write(res.Payload)
}

// handleInvokeStream serves InvokeWithResponseStream: the response is an
// AWS event stream (what aws-sdk-go-v2 reads): a PayloadChunk event for
// each piece the runtime streams, then InvokeComplete with the error, if
// any, and the log tail.
func (e *Emulator) handleInvokeStream(w http.ResponseWriter, r *http.Request) {
	fn, ok := e.function(r.PathValue("name"))
	if !ok {
		writeAPIError(w, http.StatusNotFound, "ResourceNotFoundException", "Function not found: "+r.PathValue("name"))
		return
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil || len(payload) > maxPayload {
		writeAPIError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException", "Request must be smaller than 6291456 bytes for the InvokeWithResponseStream operation")
		return
	}
	if t := r.Header.Get("X-Amz-Invocation-Type"); t != "" && t != "RequestResponse" {
		writeAPIError(w, http.StatusBadRequest, "InvalidParameterValueException", "InvokeWithResponseStream takes RequestResponse only, not "+t)
		return
	}
	// The chunk callback runs on the sandbox's goroutine, which may outlive
	// the invocation (a timeout, a crash): the writer is used under mu,
	// and not at all once the stream is ended.
	var mu sync.Mutex
	enc := eventstream.NewEncoder()
	rc := http.NewResponseController(w)
	started, ended := false, false
	start := func(requestID string) {
		if started {
			return
		}
		started = true
		h := w.Header()
		h.Set("Content-Type", "application/vnd.amazon.eventstream")
		h.Set("X-Amzn-Requestid", requestID)
		h.Set("X-Amz-Executed-Version", "$LATEST")
		w.WriteHeader(http.StatusOK)
	}
	event := func(typ, contentType string, payload []byte) error {
		err := enc.Encode(w, eventstream.Message{Headers: eventstream.Headers{
			{Name: ":message-type", Value: eventstream.StringValue("event")},
			{Name: ":event-type", Value: eventstream.StringValue(typ)},
			{Name: ":content-type", Value: eventstream.StringValue(contentType)},
		}, Payload: payload})
		if err == nil {
			err = rc.Flush()
		}
		return err
	}
	res, err := e.InvokeStream(r.Context(), fn.cfg.Name, payload, r.Header.Get("X-Amz-Client-Context"), func(requestID string, b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return errors.New("the stream has ended")
		}
		start(requestID)
		return event("PayloadChunk", "application/octet-stream", b)
	})
	mu.Lock()
	defer mu.Unlock()
	ended = true
	switch {
	case errors.Is(err, errThrottled) && !started:
		writeAPIError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Rate Exceeded.",
			"Reason", "ReservedFunctionConcurrentInvocationLimitExceeded")
		return
	case err != nil && !started:
		writeAPIError(w, http.StatusInternalServerError, "ServiceException", err.Error())
		return
	}
	start(res.RequestID)
	if len(res.Payload) > 0 && res.FunctionError == "" {
		event("PayloadChunk", "application/octet-stream", res.Payload) // a runtime that did not stream
	}
	done := map[string]string{}
	if res.FunctionError != "" {
		var fe struct {
			Type    string `json:"errorType"`
			Message string `json:"errorMessage"`
		}
		json.Unmarshal(res.Payload, &fe)
		done["ErrorCode"], done["ErrorDetails"] = fe.Type, string(res.Payload)
	}
	if r.Header.Get("X-Amz-Log-Type") == "Tail" {
		done["LogResult"] = base64.StdEncoding.EncodeToString([]byte(res.LogTail))
	}
	b, _ := json.Marshal(done)
	event("InvokeComplete", "application/json", b)
}

// invokeAsync runs an Event invocation, retrying throttles for a while as
// Lambda's async queue does.
func (e *Emulator) invokeAsync(name string, payload []byte, cc string) {
	defer e.wg.Done()
	delay := 100 * time.Millisecond
	for deadline := time.Now().Add(time.Minute); ; {
		_, err := e.Invoke(context.Background(), name, payload, cc)
		if !errors.Is(err, errThrottled) || time.Now().After(deadline) {
			if err != nil {
				e.log.Warn("async invocation dropped", "function", name, "err", err)
			}
			return
		}
		select {
		case <-e.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// writeAPIError writes an error shaped like Lambda's REST-JSON errors:
// aws-sdk-go-v2 reads the code from X-Amzn-Errortype and the message from
// the body.
func writeAPIError(w http.ResponseWriter, status int, code, msg string, extra ...string) {
	body := map[string]string{"Type": "User", "message": msg}
	for i := 0; i+1 < len(extra); i += 2 {
		body[extra[i]] = extra[i+1]
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Errortype", code)
	w.Header().Set("X-Amzn-Requestid", newID()) // every Lambda API answer has one
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// logOut writes one sandbox line to FunctionLog.
func (e *Emulator) logOut(function, sandbox, line string) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	fmt.Fprintf(e.out, "[%s/%s] %s\n", function, sandbox, line)
}

func (e *Emulator) handleStats(w http.ResponseWriter, r *http.Request) {
	out := map[string]Stats{}
	for name := range e.functions {
		if q := r.URL.Query().Get("function"); q != "" && q != name {
			continue
		}
		out[name], _ = e.Stats(name)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// SandboxInfo describes one live sandbox.
type SandboxInfo struct {
	Function string `json:"function"`
	ID       string `json:"id"`
	PID      int    `json:"pid"`
	Idle     bool   `json:"idle"`
	// Invocation is the request id of the invocation it runs, if any.
	Invocation string `json:"invocation,omitempty"`
}

// Sandboxes lists the live sandboxes of every function, by function and id.
func (e *Emulator) Sandboxes() []SandboxInfo {
	var out []SandboxInfo
	for name, fn := range e.functions {
		fn.mu.Lock()
		idle := map[*sandbox]bool{}
		for _, sb := range fn.idle {
			idle[sb] = true
		}
		var sbs []*sandbox
		for sb := range fn.all {
			sbs = append(sbs, sb)
		}
		fn.mu.Unlock()
		for _, sb := range sbs { // sb.mu is never taken under fn.mu
			info := SandboxInfo{Function: name, ID: sb.id, PID: sb.pid, Idle: idle[sb]}
			sb.mu.Lock()
			if sb.cur != nil {
				info.Invocation = sb.cur.id
			}
			sb.mu.Unlock()
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Function != out[j].Function {
			return out[i].Function < out[j].Function
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (e *Emulator) handleSandboxes(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(e.Sandboxes())
}

// staleGroup reports whether a cgroup directory name is an emulator's
// (lambdaemu-PID-SUFFIX) whose process is gone.
func staleGroup(name string) bool {
	rest, ok := strings.CutPrefix(name, "lambdaemu-")
	if !ok {
		return false
	}
	pidText, _, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidText)
	if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
