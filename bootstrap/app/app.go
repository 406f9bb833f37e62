// Package app runs the user's web server as a child process and proxies
// requests to it over localhost keep-alive connections.
package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/loglimit"
	"github.com/ferryrun/ferry/internal/proctree"
	"github.com/ferryrun/ferry/internal/tunnel"
)

// Config describes the app process.
type Config struct {
	Cmd           string        // run with sh -c; required
	Port          int           // given to the app as PORT
	ReadinessPath string        // polled until it answers below 500
	ReadyTimeout  time.Duration // bound on each start
	MaxConns      int           // idle keep-alive connections kept to the app
	Logger        *slog.Logger  // if nil, slog.Default()
	Stdout        io.Writer     // the app's output; if nil, os.Stdout
	Env           []string      // added to the app's environment (KEY=value)
	// OnExit, if not nil, is called when the app process exits (what it
	// had begun in the background died with it).
	OnExit func()
}

// Supervisor owns the app process: it starts it, waits until it is ready,
// restarts it on the next request after it dies, and proxies to it.
type Supervisor struct {
	// static after New
	cfg    Config
	target *url.URL
	proxy  *httputil.ReverseProxy
	probe  *http.Client // asks the readiness path, one connection a time
	log    *slog.Logger
	warns  loglimit.Limiter // per-request warnings

	mu   sync.Mutex // serializes starts; guards proc
	proc *process   // nil before the first start

	// suspect counts connections that broke under a request since the app
	// last proved it takes connections (0: it has). The app may be dying,
	// and a request written to it now could be reset unseen or seen, with
	// no telling which: while suspect, each request is sent only after the
	// app answers a probe. A count, so that a probe that began before a
	// later break does not clear it.
	suspect atomic.Uint64
}

type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // set before exited closes
}

func (p *process) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// New returns a Supervisor; nothing runs until Start.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Cmd == "" {
		return nil, errors.New("no app command: set FERRY_APP_CMD, or ship run.sh in the function code")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	s := &Supervisor{cfg: cfg, log: cfg.Logger, target: &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))}}
	s.probe = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.MaxConns,
		MaxIdleConnsPerHost: cfg.MaxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(s.target)
			r.Out.Host = r.In.Host // the app sees the client's Host
			// Rewrite drops inbound X-Forwarded-* by design. Ours come from
			// the router (an authenticated tunnel peer) or from the Lambda
			// event, so they describe the real client: keep them.
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v := r.In.Header.Values(h); len(v) > 0 {
					r.Out.Header[h] = v
				}
			}
		},
		Transport:     &restartingTransport{base: transport, s: s},
		FlushInterval: -1, // stream: flush every write
		ErrorHandler:  s.proxyError,
	}
	return s, nil
}

// Start starts the app and waits until its readiness path answers. It is
// the init phase: an error here is an init error.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(ctx)
}

func (s *Supervisor) startLocked(ctx context.Context) error {
	cmd := exec.Command("/bin/sh", "-c", s.cfg.Cmd)
	cmd.Env = append(append(os.Environ(), s.cfg.Env...), "PORT="+strconv.Itoa(s.cfg.Port))
	cmd.Stdout, cmd.Stderr = s.cfg.Stdout, s.cfg.Stdout
	// The app stays in our process group: whatever freezes or kills the
	// sandbox (Lambda's VM freeze, the emulator's group signals) reaches it
	// too. Pdeathsig covers sh only; sh forks the app, so Stop kills the tree.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting app %q: %w", s.cfg.Cmd, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if p.err == nil {
			p.err = errors.New("exit status 0")
		}
		close(p.exited)
		s.log.Warn("app exited", "err", p.err)
		if s.cfg.OnExit != nil {
			s.cfg.OnExit()
		}
	}()
	s.proc = p
	if err := s.awaitReady(ctx, p); err != nil {
		proctree.Signal(cmd.Process.Pid, syscall.SIGKILL)
		return err
	}
	s.suspect.Store(0)
	s.log.Info("app ready", "cmd", s.cfg.Cmd, "port", s.cfg.Port, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// awaitReady polls the readiness path every 10ms.
func (s *Supervisor) awaitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.answers(ctx) == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("app exited before it was ready: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("app not ready at %s within %v", s.cfg.ReadinessPath, s.cfg.ReadyTimeout)
		case <-tick.C:
		}
	}
}

// answers asks the app's readiness path once, on a connection of its own:
// an error if it does not answer, or answers 500 or more.
func (s *Supervisor) answers(ctx context.Context) error {
	status, err := s.ask(ctx)
	if err == nil && status >= 500 {
		err = fmt.Errorf("readiness path answered %d", status)
	}
	return err
}

// takesConnections reports whether the app takes connections and reads
// what is sent on them: it answered a probe, whatever it said (an app
// whose health check fails on its database still runs requests), or kept
// the probe waiting (busy, not dead). A connection refused, reset or
// closed unanswered is the error.
func (s *Supervisor) takesConnections(ctx context.Context) error {
	_, err := s.ask(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil
	}
	return err
}

// ask sends one GET to the readiness path, waiting at most 500 ms.
func (s *Supervisor) ask(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.target.String()+s.cfg.ReadinessPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.probe.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ensure restarts the app if it has died.
func (s *Supervisor) ensure(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && s.proc.alive() {
		return nil
	}
	if s.proc != nil {
		s.log.Warn("restarting app", "previous_exit", s.proc.err)
	}
	return s.startLocked(ctx)
}

// restartingTransport retries a request once when the app refused the
// connection: the app never saw the request, so it is safe to send again
// once the app is restarted. This closes the window between the app dying
// and the supervisor reaping it.
type restartingTransport struct {
	base *http.Transport
	s    *Supervisor
}

func (t *restartingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if breaks := t.s.suspect.Load(); breaks > 0 {
		// Ask first: a probe refused or reset costs nothing, and this
		// request has not been sent.
		if err := t.s.takesConnections(req.Context()); err != nil {
			return t.refused(req, &unreachableError{err}, false)
		}
		t.s.suspect.CompareAndSwap(breaks, 0)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil && !isDialError(err) && req.Context().Err() == nil {
		// The connection broke under a request: the app may be dying.
		// The idle connections it leaves are dead too, and a request
		// written to one is reset with no way to tell whether the app
		// saw it (a 502 for a request sent just after a crash, before
		// the supervisor knew). So is a fresh connection to a dying app:
		// Linux may release its connections before its port. Later
		// requests wait for the app to answer its readiness path.
		t.s.suspect.Add(1)
		t.base.CloseIdleConnections()
	}
	if err == nil || !isDialError(err) {
		return resp, err
	}
	return t.refused(req, &unreachableError{err}, true)
}

// refused handles a request the app never received: once the app is known
// dead it is restarted and the request sent again; while it runs but
// refuses, err stands and the request is refused for another instance.
// tried says whether a try was made, which closed the request's body.
func (t *restartingTransport) refused(req *http.Request, err error, tried bool) (*http.Response, error) {
	t.s.mu.Lock()
	p := t.s.proc
	t.s.mu.Unlock()
	// A process that has exited but is not yet reaped is dead: wait for
	// the reaping however slow a busy machine makes it (a fixed 200 ms
	// once answered 502 to the first request after a crash in CI). One
	// still running gets a moment to exit, else it is refusing.
	wait := 200 * time.Millisecond
	if !proctree.Alive(p.cmd.Process.Pid) {
		wait = 5 * time.Second
	}
	select {
	case <-p.exited:
	case <-time.After(wait):
		return nil, err // the app is running but refusing connections
	case <-req.Context().Done():
		return nil, err
	}
	if rerr := t.s.ensure(req.Context()); rerr != nil {
		return nil, fmt.Errorf("%w; restarting the app: %v", err, rerr)
	}
	// The failed attempt closed the body: send it again only from a copy.
	if tried && req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, err
		}
		body, gerr := req.GetBody()
		if gerr != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = body
	}
	resp, rerr := t.base.RoundTrip(req)
	if rerr != nil && isDialError(rerr) {
		rerr = &unreachableError{rerr}
	}
	return resp, rerr
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// unreachableError is a request the app never received: it did not
// accept the connection.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string {
	return "app did not accept the connection: " + e.err.Error()
}
func (e *unreachableError) Unwrap() error { return e.err }

// replayLimit is the largest request body kept in memory so that a
// request can be sent again to an app restarted after a crash.
const replayLimit = 64 << 10

// nacker is a ResponseWriter that can refuse a request as ferry does, so
// that the router sends it elsewhere (the tunnel's stream writer).
type nacker interface {
	Nack(reason string)
}

// Ready reports whether the app process is running.
func (s *Supervisor) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && s.proc.alive()
}

// ServeHTTP proxies r to the app, restarting the app first if it died.
func (s *Supervisor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.ensure(r.Context()); err != nil {
		s.log.Error("app unavailable", "err", err)
		http.Error(w, "ferry: app unavailable: "+err.Error(), http.StatusBadGateway)
		return
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength > 0 && r.ContentLength <= replayLimit {
		b, err := io.ReadAll(io.LimitReader(r.Body, replayLimit+1))
		r.Body.Close()
		if err != nil {
			http.Error(w, "ferry: reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	s.proxy.ServeHTTP(w, r)
}

// proxyError answers a request the app could not complete: 502, saying why.
func (s *Supervisor) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the router gave up on the stream; nobody to answer
	}
	var unreachable *unreachableError
	if n, ok := w.(nacker); ok && errors.As(err, &unreachable) {
		// The app never saw it: refuse it, and the router sends it to
		// another instance (a 502 here once failed requests that were
		// never run).
		s.warns.Warn(s.log, "app did not accept the connection; request refused for another instance", "path", r.URL.Path, "err", err)
		n.Nack(tunnel.NackAppUnreachable)
		return
	}
	// The client reads what happened, not the error's text (addresses,
	// the app's exit status): the log has that.
	reason, detail := "its connection to the app failed", err.Error()
	s.mu.Lock()
	if p := s.proc; p != nil && !p.alive() {
		reason, detail = "the app exited", "app exited: "+p.err.Error()
	}
	s.mu.Unlock()
	s.warns.Warn(s.log, "app request failed", "path", r.URL.Path, "err", detail)
	http.Error(w, "ferry: the app did not complete this request: "+reason, http.StatusBadGateway)
}

// PIDs returns the app's root process id (its tree counts), for CPU
// accounting, or nil.
func (s *Supervisor) PIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || !s.proc.alive() {
		return nil
	}
	return []int{s.proc.cmd.Process.Pid}
}

// Stop kills the app and everything it started.
func (s *Supervisor) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && s.proc.alive() {
		proctree.Signal(s.proc.cmd.Process.Pid, syscall.SIGKILL)
		<-s.proc.exited
	}
}

// DialApp connects to the app's port: a protocol upgrade (a WebSocket)
// goes to the app over a connection of its own.
func (s *Supervisor) DialApp(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", s.target.Host)
}
