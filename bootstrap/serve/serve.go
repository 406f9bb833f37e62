// Package serve runs an http.Handler as a Lambda function with ferry.
//
// Go users build their own bootstrap around it:
//
//	func main() { serve.Start(myHandler) }
//
// Each invocation is either a dial-back from ferry's router (the event has a
// "ferry" key), served as many concurrent requests over one tunnel until the
// instance is idle or near its deadline, or an ordinary HTTP event (Function
// URL, API Gateway, ALB), served as one request.
package serve

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/ferryrun/ferry/bootstrap/admit"
	"github.com/ferryrun/ferry/bootstrap/background"
	"github.com/ferryrun/ferry/bootstrap/config"
	"github.com/ferryrun/ferry/bootstrap/direct"
	"github.com/ferryrun/ferry/bootstrap/runtimeapi"
	"github.com/ferryrun/ferry/internal/dialback"
	"github.com/ferryrun/ferry/internal/envcheck"
	"github.com/ferryrun/ferry/internal/version"
)

// Options configure Run.
type Options struct {
	// Handler serves every request. Required.
	Handler http.Handler
	// Config is the bootstrap configuration; see config.Load.
	Config config.Config
	// Logger; if nil, slog.Default().
	Logger *slog.Logger
	// PIDs returns processes whose CPU counts toward CPU admission besides
	// this one (the app process), where the sandbox's cgroup cannot be
	// read. If nil, only this process counts.
	PIDs func() []int
	// RuntimeAPI is the Runtime API host:port. If empty,
	// $AWS_LAMBDA_RUNTIME_API.
	RuntimeAPI string
	// MemoryMB is reported in the tunnel hello. If zero,
	// $AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
	MemoryMB int
	// Accounting receives each invocation's CPU line (see cpuLine),
	// whatever the log level; if nil, os.Stderr, which Lambda sends to the
	// function's log beside its REPORT line.
	Accounting io.Writer
	// Background tracks work the app does after answering (WaitUntil, and
	// the loopback API an app in its own process uses); if nil, a new one.
	Background *background.Tracker
}

// WaitUntil runs fn after the response, as Vercel's waitUntil: the
// invocation serving the request whose context ctx is (or descends from)
// does not end until fn returns, bounded by the drain before its
// deadline, when fn's context is cancelled. Call it from a handler; it
// does not block. It returns false if fn could not be registered
// (background.MaxPending already pending): fn does not run.
func WaitUntil(ctx context.Context, fn func(context.Context)) bool {
	return background.Go(ctx, fn)
}

// Start serves handler with configuration from the environment until the
// process is stopped. A bad configuration is reported to Lambda as an init
// error. Start does not return.
func Start(handler http.Handler) {
	client := runtimeapi.New(os.Getenv("AWS_LAMBDA_RUNTIME_API"))
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		InitFail(context.Background(), client, slog.New(slog.NewJSONHandler(os.Stderr, nil)), "Ferry.InvalidConfig", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	WarnUnknown(log)
	err = Run(context.Background(), Options{Handler: handler, Config: cfg, Logger: log})
	log.Error("runtime loop ended", "err", err)
	os.Exit(1)
}

// WarnUnknown logs each FERRY_ variable of the environment the bootstrap
// does not read (a misspelling, say), with the name nearest to it, and the
// bootstrap's version.
func WarnUnknown(log *slog.Logger) {
	log.Debug("ferry bootstrap", "version", version.String())
	for _, w := range envcheck.Unknown(os.Environ(), "FERRY_", config.Names) {
		log.Warn(w)
	}
}

// InitFail reports an init error to Lambda, logs it and exits.
func InitFail(ctx context.Context, client *runtimeapi.Client, log *slog.Logger, errorType string, err error) {
	log.Error("init failed", "type", errorType, "err", err)
	if perr := client.InitError(ctx, errorType, err); perr != nil {
		log.Error("reporting init error", "err", perr)
	}
	os.Exit(1)
}

// Run serves invocations until ctx ends or the Runtime API fails.
func Run(ctx context.Context, opts Options) error {
	if opts.Handler == nil {
		return errors.New("serve: Options.Handler is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RuntimeAPI == "" {
		opts.RuntimeAPI = os.Getenv("AWS_LAMBDA_RUNTIME_API")
	}
	if opts.RuntimeAPI == "" {
		return errors.New("serve: AWS_LAMBDA_RUNTIME_API is not set: not running in Lambda")
	}
	if opts.MemoryMB == 0 {
		opts.MemoryMB, _ = strconv.Atoi(os.Getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
	}
	adm, cpu, closeCounter := newAdmitter(opts)
	defer closeCounter()
	if opts.Accounting == nil {
		opts.Accounting = os.Stderr
	}
	if opts.Background == nil {
		opts.Background = background.New()
	}
	app, bg := opts.Handler, opts.Background
	opts.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		app.ServeHTTP(w, req.WithContext(background.NewContext(req.Context(), bg)))
	})
	r := &runner{
		opts:   opts,
		cfg:    opts.Config,
		log:    opts.Logger,
		client: runtimeapi.New(opts.RuntimeAPI),
		adm:    adm,
		cpu:    cpu,
		bg:     opts.Background,
		server: &http.Server{},
	}
	if d, ok := app.(AppDialer); ok {
		r.dialApp = d.DialApp
	} else {
		r.dialApp = pipeDialer(opts.Handler)
	}
	for {
		inv, err := r.client.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		// Lambda's runtimes expose the trace header to the code this way.
		os.Setenv("_X_AMZN_TRACE_ID", inv.TraceID)
		if err := r.handle(ctx, inv); err != nil {
			return err
		}
	}
}

// runner is owned by Run's goroutine.
type runner struct {
	opts   Options
	cfg    config.Config
	log    *slog.Logger
	client *runtimeapi.Client
	adm    *admit.Admitter // lives as long as the sandbox: what it learns carries over
	cpu    admit.Counter   // the sandbox's CPU used so far
	bg     *background.Tracker
	// dialApp connects to the app for a protocol upgrade (a WebSocket).
	dialApp func(context.Context) (net.Conn, error)
	// server stands for the http.Server a direct request has none of.
	server *http.Server
}

// newAdmitter reads the sandbox's CPU from its cgroup where it can, else
// from the bootstrap and app processes. The vCPU is the least of the
// cgroup's quota, Lambda's share for the memory size (memory/1769) and
// the CPUs Go may use.
func newAdmitter(opts Options) (*admit.Admitter, admit.Counter, func()) {
	cpus := float64(runtime.GOMAXPROCS(0))
	if opts.MemoryMB > 0 {
		cpus = min(cpus, max(float64(opts.MemoryMB)/1769, 0.05))
	}
	counter, quota, closeFn, err := admit.SandboxCounter()
	// The watch over kinds not yet learnt needs the app's CPU apart from
	// the bootstrap's, at fine resolution: an app of its own, and the
	// cgroup's counter.
	var own admit.Counter
	if err == nil && opts.PIDs != nil {
		own = admit.OwnCounter
	}
	if err != nil {
		opts.Logger.Debug("CPU admission reads process counters: no cgroup CPU accounting visible", "err", err)
		counter, closeFn = admit.ProcessCounter(opts.PIDs), func() error { return nil }
	} else if quota > 0 {
		cpus = min(cpus, quota)
	}
	// Admission and the accounting read it from different goroutines; a
	// cgroup counter is for one at a time.
	var mu sync.Mutex
	read := counter
	counter = func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return read()
	}
	adm := admit.New(admit.Config{CPUs: cpus, Budget: opts.Config.CPUBudget, Counter: counter, Own: own})
	return adm, counter, func() { closeFn() }
}

// handle answers one invocation. It returns an error only when the Runtime
// API cannot be told the outcome.
func (r *runner) handle(ctx context.Context, inv *runtimeapi.Invocation) error {
	log := r.log.With("request_id", inv.RequestID)
	invCtx, cancel := context.WithDeadline(ctx, inv.Deadline)
	defer cancel()
	if n := r.bg.Open(); n > 0 {
		log.Warn("background work registered between invocations dropped", "pending", n)
	}
	defer r.bg.Close()
	cpu0 := r.cpu()
	account := func() {
		fmt.Fprint(r.opts.Accounting, cpuLine(inv.RequestID, max(r.cpu()-cpu0, 0)))
	}

	p, isDialBack, err := dialback.Parse(inv.Payload)
	switch {
	case isDialBack && err != nil:
		log.Error("bad dial-back payload", "err", err)
		account()
		return r.client.Fail(ctx, inv.RequestID, "Ferry.BadPayload", err)
	case isDialBack:
		sum, ph, err := r.serveTunnel(invCtx, inv, p, log)
		if err != nil {
			log.Error("tunnel failed", "router", p.Router, "err", err)
			account()
			return r.client.Fail(ctx, inv.RequestID, "Ferry.TunnelFailed", err)
		}
		sum.CPUUs = max(r.cpu()-cpu0, 0).Microseconds()
		log.Info("tunnel invocation done", append([]any{"requests", sum.Requests, "nacks", sum.Nacks, "busy_ms", sum.BusyMs, "busy_us", sum.BusyUs,
			"cpu_us", sum.CPUUs, "background_us", sum.BackgroundUs, "ended", sum.Ended, "linger_us", sum.LingerUs}, ph.logAttrs()...)...)
		fmt.Fprint(r.opts.Accounting, cpuLine(inv.RequestID, time.Duration(sum.CPUUs)*time.Microsecond))
		return r.client.Respond(ctx, inv.RequestID, sum.JSON())
	}

	// Background work the request begins runs on after its response,
	// before the next invocation is asked for.
	defer r.afterResponse(ctx, inv, log)
	req, kind, multiValue, err := direct.Request(invCtx, inv.Payload)
	if err != nil {
		log.Error("direct invocation", "err", err)
		account()
		return r.client.Fail(ctx, inv.RequestID, "Ferry.UnsupportedEvent", err)
	}
	// As under an http.Server: handlers that behave differently outside
	// one (httputil.ReverseProxy swallows a response body that breaks off
	// instead of aborting) behave as they do on a tunnel.
	req = req.WithContext(context.WithValue(req.Context(), http.ServerContextKey, r.server))
	if r.cfg.StreamResponses && kind == direct.HTTPv2 && direct.FromFunctionURL(req) {
		return r.serveStreamed(ctx, inv, req, account, log)
	}
	rec := direct.NewRecorder()
	ticket := r.adm.Take(admit.KindOf(req)) // what a direct request costs teaches admission too
	panicked := serveRecovering(r.opts.Handler, rec, req)
	ticket.Done()
	if panicked != nil && !rec.Overflowed() {
		// Reported as the invocation's error, as aws-lambda-go does; the
		// runtime lives on for the next invocation.
		typ, err := panicked.failure()
		log.Error(err.Error(), "stack", string(panicked.stack))
		account() // last before the answer: the log tail ends with it
		return r.client.Fail(ctx, inv.RequestID, typ, err)
	}
	out, err := direct.Response(kind, multiValue, rec)
	account()
	if err != nil {
		return r.client.Fail(ctx, inv.RequestID, "Ferry.ResponseTooLarge", fmt.Errorf("direct invocation: %w", err))
	}
	return r.client.Respond(ctx, inv.RequestID, out)
}

// serveStreamed answers a direct invocation with the Runtime API's
// streaming response: the prelude and each write go out as the handler
// makes them. A handler that panics after writing ends the stream with the
// error trailers, as Lambda reads them.
func (r *runner) serveStreamed(ctx context.Context, inv *runtimeapi.Invocation, req *http.Request, account func(), log *slog.Logger) error {
	pr, pw := io.Pipe()
	trailer := http.Header{runtimeapi.TrailerErrorType: nil, runtimeapi.TrailerErrorBody: nil}
	errc := make(chan error, 1)
	// The stream starts with the handler's first byte: a handler that
	// fails before it answers fails the invocation as in buffered mode,
	// instead of after a 200.
	out := &startOnWrite{w: pw, start: func() {
		go func() {
			err := r.client.RespondStream(ctx, inv.RequestID, direct.StreamContentType, pr, trailer)
			pr.CloseWithError(fmt.Errorf("the streamed response ended: %v", err)) // a handler still writing stops
			errc <- err
		}()
	}}
	sw := direct.NewStreamer(out)
	ticket := r.adm.Take(admit.KindOf(req))
	panicked := serveRecovering(r.opts.Handler, sw, req)
	ticket.Done()
	if panicked != nil && !out.started {
		typ, err := panicked.failure()
		log.Error(err.Error(), "stack", string(panicked.stack))
		account()
		return r.client.Fail(ctx, inv.RequestID, typ, err)
	}
	sw.Close()
	if panicked != nil {
		typ, err := panicked.failure()
		log.Error(err.Error(), "stack", string(panicked.stack))
		trailer.Set(runtimeapi.TrailerErrorType, typ)
		trailer.Set(runtimeapi.TrailerErrorBody, base64.StdEncoding.EncodeToString(runtimeapi.ErrorBody(typ, err)))
	}
	account() // before the stream ends: the log tail ends with it
	pw.Close()
	return <-errc
}

// startOnWrite calls start before its first write goes to w.
type startOnWrite struct {
	w       io.Writer
	start   func()
	started bool
}

func (s *startOnWrite) Write(p []byte) (int, error) {
	if !s.started {
		s.started = true
		s.start()
	}
	return s.w.Write(p)
}

// afterResponse lets background work a direct invocation's request began
// finish, until the deadline's safety margin, and cancels what is left.
// (Lambda bills an invocation until its runtime asks for the next one.
// The invocation's CPU line, written before its answer, leaves this work
// out.)
func (r *runner) afterResponse(ctx context.Context, inv *runtimeapi.Invocation, log *slog.Logger) {
	if r.bg.Pending() == 0 {
		r.bg.TakeBusy()
		return
	}
	ctx, cancel := context.WithDeadline(ctx, inv.Deadline.Add(-postSafety))
	defer cancel()
	r.bg.Wait(ctx)
	if n := r.bg.CancelAll(); n > 0 {
		log.Warn("background work cut short at the deadline", "pending", n)
	}
	log.Info("background work done after the response", "background_us", r.bg.TakeBusy().Microseconds())
}

// cpuLine is the line the bootstrap writes to the function's log for each
// invocation: the CPU the sandbox used while it ran, in the spirit of
// Lambda's REPORT line, written just before the invocation is answered so
// that it falls in the log tail an invoke returns. The router reads it
// from there for plain invocations (a tunnel's summary carries the same
// figure); a user reads it in CloudWatch Logs.
func cpuLine(requestID string, used time.Duration) string {
	return fmt.Sprintf("%s RequestId: %s\tCPU Time: %.3f ms\n", dialback.CPULinePrefix, requestID, float64(used)/float64(time.Millisecond))
}

type panicked struct {
	value any
	stack []byte
}

// failure is the invocation error a panic makes: the app's response
// broken off (a proxy aborts so), or the handler's own panic.
func (p *panicked) failure() (errorType string, err error) {
	if p.value == http.ErrAbortHandler {
		return "Ferry.ResponseCutShort", errors.New("the app's response broke off before its end")
	}
	return "Ferry.HandlerPanic", fmt.Errorf("handler panicked: %v", p.value)
}

// serveRecovering serves req, and returns what the handler panicked with,
// if it did. (A proxy handler panics with http.ErrAbortHandler when the
// response cannot be written, past the direct response limit, say.)
func serveRecovering(h http.Handler, w http.ResponseWriter, req *http.Request) (p *panicked) {
	defer func() {
		if v := recover(); v != nil {
			p = &panicked{value: v, stack: debug.Stack()}
		}
	}()
	h.ServeHTTP(w, req)
	return nil
}
