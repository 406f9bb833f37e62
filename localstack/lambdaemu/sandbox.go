package lambdaemu

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/cgroup"
	"github.com/ferryrun/ferry/internal/proctree"
)

// sandbox is one execution environment: a process group running the
// function's bootstrap, and the Runtime API it talks to.
type sandbox struct {
	// static after start
	fn      *function
	id      string
	cmd     *exec.Cmd
	pid     int
	started time.Time
	ln      net.Listener
	appPort int // handed out by the emulator's ports; 0 when the function pins one
	srv     *http.Server
	logs    *logPipe
	// cg holds the sandbox's processes to its vCPU share and memory; nil
	// where the emulator runs without cgroups.
	cg *cgroup.Group

	// freezer orders freeze, thaw and kill. A process frozen by the cgroup
	// freezer does not act on SIGKILL until it is thawed, so a freeze that
	// landed after a kill's thaw would leave the sandbox alive, frozen, for
	// ever, and whoever waits for it to exit waiting with it.
	freezer sync.Mutex

	next   chan *invocation // the one invocation handed to the runtime; buffered 1
	ready  chan struct{}    // closed at the runtime's first /next: init done
	exited chan struct{}    // closed when the process has exited

	mu       sync.Mutex
	cur      *invocation   // guarded by mu; the invocation the runtime holds
	initErr  error         // guarded by mu; set by /init/error or an early exit
	initDur  time.Duration // guarded by mu
	exitErr  error         // guarded by mu; set before exited closes
	idleFrom time.Time     // guarded by mu; when the sandbox last went idle
	killed   bool          // guarded by mu
	peakMB   int           // guarded by mu; the cgroup's peak memory, kept once it is gone
}

// invocation is one Invoke in flight.
type invocation struct {
	id            string
	payload       []byte
	clientContext string
	timeout       time.Duration
	startNs       atomic.Int64 // unix ns when handed to the runtime; 0 before
	// before is the sandbox's CPU accounting when it was handed over;
	// guarded by the sandbox's mu, like cur.
	before *cgroup.Sample
	result chan result // buffered 1; exactly one send, via finish
	once   sync.Once
	logs   *tailBuffer
	// stream, if not nil, takes a streamed response's pieces as they
	// arrive (InvokeWithResponseStream).
	stream func([]byte) error
}

type result struct {
	body      []byte
	funcError string // "" or "Unhandled"
	end       time.Time
	unstarted bool // the sandbox died before its runtime took the invocation
	// contended is the time the sandbox waited for cores while its runtime
	// had the invocation (see cgroup.Sample.ContendedSince); 0 unless the
	// runtime answered.
	contended time.Duration
	// cpu is the CPU the sandbox used in the meantime.
	cpu time.Duration
}

// again returns inv afresh, for another sandbox: same request, no result.
func (inv *invocation) again() *invocation {
	return &invocation{id: inv.id, payload: inv.payload, clientContext: inv.clientContext, timeout: inv.timeout, stream: inv.stream,
		result: make(chan result, 1), logs: inv.logs}
}

// finish delivers r, ending the invocation's billed time at r.end, or now
// if it is not set.
func (inv *invocation) finish(r result) {
	inv.once.Do(func() {
		if r.end.IsZero() {
			r.end = time.Now()
		}
		inv.result <- r
	})
}

// traceID returns an X-Ray trace header of the form Lambda passes.
func traceID(now time.Time) string {
	var b [20]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0", now.Unix(), h[:24], h[24:40])
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// startSandbox starts a process for fn and serves its Runtime API.
func (fn *function) startSandbox() (*sandbox, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("runtime api listener: %w", err)
	}
	sb := &sandbox{
		fn: fn, id: newID()[:8], ln: ln, started: time.Now(),
		next: make(chan *invocation, 1), ready: make(chan struct{}), exited: make(chan struct{}),
	}
	sb.srv = &http.Server{Handler: sb.routes(), ReadHeaderTimeout: 5 * time.Second}

	entry, args, err := fn.entrypoint()
	if err != nil {
		ln.Close()
		return nil, err
	}
	appPort := 0
	if _, pinned := fn.cfg.Env["FERRY_APP_PORT"]; !pinned {
		if appPort, err = fn.emu.ports.take(); err != nil {
			ln.Close()
			return nil, err
		}
		sb.appPort = appPort
	}
	release := func() {
		if appPort > 0 {
			fn.emu.ports.release(appPort)
		}
	}
	// The sandbox's first process waits behind a shell until the emulator
	// has put it in its cgroup, so that nothing it starts escapes the limits.
	var gate *os.File
	cg := fn.emu.newGroup(fn, sb.id)
	cmd := exec.Command(entry, args...)
	if cg != nil {
		var gateR *os.File
		if gateR, gate, err = os.Pipe(); err != nil {
			cg.Remove()
			ln.Close()
			release()
			return nil, err
		}
		defer gateR.Close()
		cmd = exec.Command("/bin/sh", append([]string{"-c", `read -r _ <&3 && exec 3<&- && exec "$0" "$@"`, entry}, args...)...)
		cmd.ExtraFiles = []*os.File{gateR}
	}
	cmd.Dir = fn.cfg.CodeDir
	cmd.Env = fn.environ(ln.Addr().String(), appPort)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The emulator owns the output pipe so that it can tell when the lines
	// printed before a response have all been read (settleLogs).
	pr, pw, err := os.Pipe()
	if err != nil {
		ln.Close()
		release()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err == nil && cg != nil {
		if err = cg.Add(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
		} else {
			_, err = gate.Write([]byte("go\n"))
		}
		gate.Close()
	}
	if err != nil {
		if cg != nil {
			cg.Remove()
		}
		pr.Close()
		ln.Close()
		release()
		return nil, fmt.Errorf("starting %s: %w", entry, err)
	}
	sb.cg = cg
	out := &lineWriter{emit: sb.logLine}
	sb.logs = newLogPipe(pr, out)
	go sb.logs.copy()
	sb.cmd, sb.pid = cmd, cmd.Process.Pid
	// Serve only now that pid is set; the runtime's first call waits in the
	// listener's backlog until then.
	go sb.srv.Serve(ln)
	go sb.wait()
	return sb, nil
}

// wait reaps the process and fails whatever it was doing.
func (sb *sandbox) wait() {
	err := sb.cmd.Wait()
	sb.logs.settle()
	defer sb.logs.close()
	sb.mu.Lock()
	if err == nil {
		err = errors.New("exit status 0")
	}
	sb.exitErr = err
	killed := sb.killed
	inv := sb.cur
	sb.mu.Unlock()
	sb.fn.removeSandbox(sb)
	// Whatever the runtime left behind dies with it, before its port is
	// reused: its cgroup, else the process group it led (what it started,
	// an app under sh, was reparented when it died but stays in the group).
	if sb.cg != nil {
		sb.cg.Kill()
	} else {
		syscall.Kill(-sb.pid, syscall.SIGKILL)
	}
	if sb.appPort > 0 {
		defer sb.fn.emu.ports.release(sb.appPort)
	}
	oom := sb.outOfMemory()
	if !killed || oom {
		sb.fn.emu.log.Warn("sandbox exited", "function", sb.fn.cfg.Name, "sandbox", sb.id, "err", err, "out_of_memory", oom)
	}
	if sb.cg != nil {
		if b, err := sb.cg.MemoryPeak(); err == nil {
			sb.mu.Lock()
			sb.peakMB = int((b + 1<<20 - 1) >> 20)
			sb.mu.Unlock()
		}
		defer sb.cg.Remove()
	}
	// Fail its work before announcing the exit, so a waiter that sees
	// exited finds the result already there.
	defer sb.srv.Close()
	defer close(sb.exited)
	exitType := "Runtime.ExitError"
	if oom {
		exitType = "Runtime.OutOfMemory"
	}
	if inv != nil {
		inv.finish(result{funcError: "Unhandled", body: errorPayload(exitType,
			fmt.Sprintf("RequestId: %s Error: Runtime exited with error: %v", inv.id, err))})
	}
	// Drain an invocation assigned but never picked up.
	select {
	case inv := <-sb.next:
		inv.finish(result{funcError: "Unhandled", unstarted: true, body: errorPayload(exitType,
			fmt.Sprintf("RequestId: %s Error: Runtime exited with error: %v", inv.id, err))})
	default:
	}
}

// outOfMemory reports whether the kernel killed any of the sandbox's
// processes for passing its memory limit.
func (sb *sandbox) outOfMemory() bool {
	if sb.cg == nil {
		return false
	}
	n, err := sb.cg.OOMKills()
	return err == nil && n > 0
}

// kill ends the sandbox: its process group and every descendant, including
// any that left the group, as the end of Lambda's VM would.
func (sb *sandbox) kill() {
	sb.freezer.Lock()
	defer sb.freezer.Unlock()
	sb.mu.Lock()
	sb.killed = true
	sb.mu.Unlock()
	proctree.Signal(sb.pid, syscall.SIGKILL)
	if sb.cg != nil {
		sb.cg.Kill() // thaws too, so that frozen processes die now
	} else {
		proctree.Signal(sb.pid, syscall.SIGCONT)
	}
}

// freeze and thaw stand in for Lambda's VM freeze: every process of the
// sandbox stops between invocations. The cgroup freezer stops the whole
// group at once, as the VM's pause does; without one, the tree is sent
// SIGSTOP and SIGCONT. A killed sandbox is never frozen again.
func (sb *sandbox) freeze() {
	sb.freezer.Lock()
	defer sb.freezer.Unlock()
	sb.mu.Lock()
	killed := sb.killed
	sb.mu.Unlock()
	if killed {
		return
	}
	if sb.cg == nil || sb.cg.Freeze() != nil {
		proctree.Signal(sb.pid, syscall.SIGSTOP)
	}
}

func (sb *sandbox) thaw() {
	sb.freezer.Lock()
	defer sb.freezer.Unlock()
	if sb.cg == nil || sb.cg.Thaw() != nil {
		proctree.Signal(sb.pid, syscall.SIGCONT)
	}
}

// awaitInit waits for the runtime's first /next, bounded by the init timeout.
func (sb *sandbox) awaitInit(ctx context.Context) error {
	t := time.NewTimer(sb.fn.cfg.InitTimeout.Duration)
	defer t.Stop()
	select {
	case <-sb.ready:
		sb.mu.Lock()
		defer sb.mu.Unlock()
		return sb.initErr
	case <-sb.exited:
		sb.mu.Lock()
		defer sb.mu.Unlock()
		if sb.initErr != nil {
			return sb.initErr
		}
		return &initError{Type: "Runtime.ExitError", Message: fmt.Sprintf("Runtime exited during init: %v", sb.exitErr)}
	case <-t.C:
		sb.kill()
		return &initError{Type: "Sandbox.Timedout", Message: fmt.Sprintf("init phase did not finish within %v", sb.fn.cfg.InitTimeout)}
	case <-ctx.Done():
		sb.kill()
		return ctx.Err()
	}
}

type initError struct{ Type, Message string }

func (e *initError) Error() string { return e.Type + ": " + e.Message }

// Runtime API, 2018-06-01.
func (sb *sandbox) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", sb.handleNext)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", sb.handleResponse)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", sb.handleError)
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", sb.handleInitError)
	return mux
}

func (sb *sandbox) handleNext(w http.ResponseWriter, r *http.Request) {
	select {
	case <-sb.ready:
	default:
		// Init is done. The invoke that started this sandbox owns it.
		sb.mu.Lock()
		sb.initDur = time.Since(sb.started)
		sb.mu.Unlock()
		close(sb.ready)
	}
	sb.mu.Lock()
	prev := sb.cur
	sb.cur = nil
	sb.idleFrom = time.Now()
	sb.mu.Unlock()
	if prev != nil {
		// Lambda treats asking for the next event as the end of the last one.
		sb.fn.markIdle(sb)
		prev.finish(result{funcError: "Unhandled", body: errorPayload("Runtime.NoResponse", "runtime asked for the next invocation without answering this one")})
	}

	// Frozen while idle, as Lambda does; thawed only to take an invocation.
	sb.freeze()
	var inv *invocation
	select {
	case inv = <-sb.next:
	case <-sb.exited:
		return
	case <-r.Context().Done():
		return
	}
	sb.thaw()

	before := sb.sample()
	now := time.Now()
	inv.startNs.Store(now.UnixNano())
	deadline := now.Add(inv.timeout)
	sb.mu.Lock()
	sb.cur = inv
	inv.before = before
	sb.mu.Unlock()
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(deadline.UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", sb.fn.arn)
	h.Set("Lambda-Runtime-Trace-Id", traceID(now))
	if inv.clientContext != "" {
		h.Set("Lambda-Runtime-Client-Context", inv.clientContext)
	}
	h.Set("Content-Type", "application/json")
	w.Write(inv.payload)
}

// current returns the invocation id names, or writes Lambda's error. It
// ends the invocation's hold on the sandbox's output, first taking in what
// the function wrote before it answered: that belongs to the log tail.
func (sb *sandbox) current(w http.ResponseWriter, id string) *invocation {
	sb.logs.settle()
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.cur == nil || sb.cur.id != id {
		writeRuntimeError(w, http.StatusBadRequest, "InvalidRequestID", "Invalid request ID: "+id)
		return nil
	}
	inv := sb.cur
	sb.cur = nil
	return inv
}

func (sb *sandbox) handleResponse(w http.ResponseWriter, r *http.Request) {
	if strings.EqualFold(r.Header.Get("Lambda-Runtime-Function-Response-Mode"), "streaming") {
		sb.handleStreamedResponse(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		writeRuntimeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	inv := sb.current(w, r.PathValue("id"))
	if inv == nil {
		return
	}
	if len(body) > maxPayload {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		sb.fn.markIdle(sb)
		inv.finish(result{funcError: "Unhandled", body: errorPayload("Function.ResponseSizeTooLarge", "Response payload size exceeded maximum allowed payload size (6291556 bytes).")})
		return
	}
	w.WriteHeader(http.StatusAccepted)
	sb.answered(inv, result{body: body})
}

// answered ends inv with res, the runtime's answer: billed to now, with
// the CPU the sandbox used and the time it waited for cores meanwhile.
func (sb *sandbox) answered(inv *invocation, res result) {
	res.end = time.Now()                              // reading the accounting is the emulator's time, not the function's
	res.cpu, res.contended = sb.usedSince(inv.before) // before the next invocation may have the sandbox
	sb.fn.markIdle(sb)                                // before finish: the caller may invoke again at once
	inv.finish(res)
}

// maxStreamed is what Lambda lets a streamed response carry: 200 MB (past
// it, the stream is cut and the invocation fails).
const maxStreamed = 200 << 20

// handleStreamedResponse takes a response the runtime streams: each piece
// goes to the invocation's caller as it arrives (or, for an invoke that
// does not stream, is gathered up to the payload limit). Trailers may end
// it with a function error, as Lambda's Runtime API allows.
func (sb *sandbox) handleStreamedResponse(w http.ResponseWriter, r *http.Request) {
	// The invocation stays current while it streams: what the function
	// logs meanwhile is its log tail's.
	sb.mu.Lock()
	inv := sb.cur
	sb.mu.Unlock()
	if inv == nil || inv.id != r.PathValue("id") {
		writeRuntimeError(w, http.StatusBadRequest, "InvalidRequestID", "Invalid request ID: "+r.PathValue("id"))
		return
	}
	var gathered []byte
	var sent int64
	tooLarge, gone := false, false
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 && !gone && !tooLarge {
			sent += int64(n)
			switch {
			case inv.stream != nil && sent > maxStreamed, inv.stream == nil && sent > maxPayload:
				tooLarge = true
			case inv.stream != nil:
				gone = inv.stream(buf[:n]) != nil
			default:
				gathered = append(gathered, buf[:n]...)
			}
		}
		if err != nil {
			break
		}
	}
	if sb.current(w, inv.id) == nil {
		return // the runtime moved on meanwhile
	}
	w.WriteHeader(http.StatusAccepted)
	res := result{body: gathered}
	if t := r.Trailer.Get("Lambda-Runtime-Function-Error-Type"); t != "" {
		body, _ := base64.StdEncoding.DecodeString(r.Trailer.Get("Lambda-Runtime-Function-Error-Body"))
		if !json.Valid(body) { // runtimes send {errorType, errorMessage}; wrap anything else
			body = errorPayload(t, string(body))
		}
		res.funcError, res.body = "Unhandled", body
	}
	if tooLarge {
		res.funcError, res.body = "Unhandled", errorPayload("Function.ResponseSizeTooLarge", "Response payload size exceeded maximum allowed payload size.")
	}
	sb.answered(inv, res)
}

func (sb *sandbox) handleError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxPayload))
	inv := sb.current(w, r.PathValue("id"))
	if inv == nil {
		return
	}
	w.WriteHeader(http.StatusAccepted)
	if !json.Valid(body) {
		body = errorPayload(r.Header.Get("Lambda-Runtime-Function-Error-Type"), string(body))
	}
	sb.answered(inv, result{funcError: "Unhandled", body: body})
}

func (sb *sandbox) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	var e struct {
		Message string `json:"errorMessage"`
		Type    string `json:"errorType"`
	}
	if json.Unmarshal(body, &e) != nil {
		e.Message = string(body)
	}
	if e.Type == "" {
		e.Type = r.Header.Get("Lambda-Runtime-Function-Error-Type")
	}
	if e.Type == "" {
		e.Type = "Runtime.Unknown"
	}
	sb.mu.Lock()
	sb.initErr = &initError{Type: e.Type, Message: e.Message}
	sb.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
	sb.fn.emu.log.Warn("sandbox init failed", "function", sb.fn.cfg.Name, "sandbox", sb.id, "type", e.Type, "message", e.Message)
	// Lambda ends the sandbox after an init error.
	go func() {
		select {
		case <-sb.exited:
		case <-time.After(500 * time.Millisecond):
			sb.kill()
		}
	}()
}

func writeRuntimeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"errorType": typ, "errorMessage": msg})
}

func errorPayload(typ, msg string) []byte {
	m := map[string]string{"errorMessage": msg}
	if typ != "" {
		m["errorType"] = typ
	}
	b, _ := json.Marshal(m)
	return b
}

// logLine receives each line the sandbox prints.
func (sb *sandbox) logLine(line string) {
	sb.fn.emu.logOut(sb.fn.cfg.Name, sb.id, line)
	sb.mu.Lock()
	inv := sb.cur
	sb.mu.Unlock()
	if inv != nil {
		inv.logs.WriteString(line + "\n")
	}
}

// memoryUsedMB is the sandbox's peak memory: its cgroup's, which counts
// every process it ever ran, or else the sum of its live processes' peaks.
// Like Lambda's, it never reads above the memory size: the kernel's peak
// can pass the limit by a few pages while it reclaims or kills.
func (sb *sandbox) memoryUsedMB() int {
	mb := sb.peakMemoryMB()
	if size := sb.fn.cfg.MemoryMB; size > 0 {
		mb = min(mb, size)
	}
	return mb
}

func (sb *sandbox) peakMemoryMB() int {
	if sb.cg != nil {
		sb.mu.Lock()
		peak := sb.peakMB
		sb.mu.Unlock()
		if peak > 0 {
			return peak
		}
		if b, err := sb.cg.MemoryPeak(); err == nil {
			return int((b + 1<<20 - 1) >> 20)
		}
	}
	kb := 0
	for _, pid := range append([]int{sb.pid}, proctree.Descendants(sb.pid)...) {
		var n int
		fmt.Sscanf(proctree.Status(pid, "VmHWM"), "%d", &n)
		kb += n
	}
	return (kb + 1023) / 1024
}

// sample reads the sandbox's CPU accounting, or nothing where it has no
// cgroup (or the cgroup is gone).
func (sb *sandbox) sample() *cgroup.Sample {
	if sb.cg == nil {
		return nil
	}
	s, err := sb.cg.Sample()
	if err != nil {
		return nil
	}
	return &s
}

// usedSince is the CPU the sandbox used since before, and the time it
// waited for cores its vCPU share entitled it to (see
// cgroup.Sample.ContendedSince); zero where it has no cgroup.
func (sb *sandbox) usedSince(before *cgroup.Sample) (cpu, contended time.Duration) {
	if before == nil {
		return 0, 0
	}
	after := sb.sample()
	if after == nil {
		return 0, 0
	}
	return max(after.CPU-before.CPU, 0), after.ContendedSince(*before, cgroup.LambdaCPU(sb.fn.cfg.MemoryMB))
}
