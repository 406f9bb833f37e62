// Package proxy is the router's ingress: it routes each client request to a
// function, places it on a live instance through the function's pool, and
// streams the response back, built on httputil.ReverseProxy.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ferryrun/ferry/internal/loglimit"
	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/router/invoke"
	"github.com/ferryrun/ferry/router/metrics"
	"github.com/ferryrun/ferry/router/pool"
	"github.com/ferryrun/ferry/router/ring"
)

// Route sends requests whose host and path match to a function. An empty
// Host matches any host; PathPrefix matches whole path segments.
type Route struct {
	Function   string
	Host       string
	PathPrefix string
}

func (r Route) matches(host, path string) bool {
	if r.Host != "" && !strings.EqualFold(r.Host, host) {
		return false
	}
	p := strings.TrimSuffix(r.PathPrefix, "/")
	return p == "" || path == p || strings.HasPrefix(path, p+"/")
}

// Config configures a Handler.
type Config struct {
	Routes []Route               // most specific wins: a host route over any-host, then the longer prefix
	Pools  map[string]*pool.Pool // by function; one for every route's function (SetRoutes replaces both)
	// QueueTimeout bounds the wait for a slot, retries included. If zero, 10s.
	QueueTimeout time.Duration
	// MaxBodyBytes bounds a request body. If zero, 32 MiB.
	MaxBodyBytes int64
	// MaxHeaderBytes bounds the request line and headers, counted as on
	// the wire. If zero, 64 KiB. (http.Server's own limit allows 4 KiB of
	// slack; this one is exact.)
	MaxHeaderBytes int
	// MaxAttempts bounds tries of one request after nacks and unprocessed
	// streams. If zero, 5.
	MaxAttempts int
	// BodyTimeout bounds a client's request body: it must have arrived
	// within BodyTimeout plus a second per bodyMinRate bytes, or the
	// request ends with 408 and frees its instance slot. If zero, 10s.
	BodyTimeout time.Duration
	// TrustedProxies are the balancers whose X-Forwarded-* headers are
	// kept (see config.Config.TrustedProxies).
	TrustedProxies []netip.Prefix
	// Plain, if not nil, invokes a function once with an HTTP event and
	// returns the response event (invoke.Invoker.Plain): pools that allow
	// it send requests no live instance can take as plain invocations
	// when tunnels are not being shared (pool.Config.Plain).
	Plain func(ctx context.Context, function string, event []byte) ([]byte, error)
	// Carry puts a request that can travel in an invoke payload in the
	// event of an invocation launched for it (pool.AcquireCarriable).
	Carry bool
	// WebSocketIdle closes a WebSocket with no byte either way for this
	// long. If zero, DefaultWebSocketIdle.
	WebSocketIdle time.Duration
	// Ring, if not nil, shares functions among router replicas: a request
	// for a function another replica owns is forwarded to it through
	// Peers, unless it came from a peer (ServePeer). WebSockets are served
	// where they arrive.
	Ring    *ring.Ring
	Peers   *ring.Transport   // required with Ring
	Metrics *metrics.Recorder // required
	Logger  *slog.Logger      // if nil, slog.Default()
}

// replayLimit is the largest request body kept in memory so the request
// can be retried after a nack. Larger bodies stream and are not retried.
const replayLimit = 64 << 10

// Handler is the ingress http.Handler.
type Handler struct {
	cfg   Config // Routes and Pools are read from table
	table atomic.Pointer[table]
	proxy *httputil.ReverseProxy
	log   *slog.Logger
	warns loglimit.Limiter // per-request warnings
}

// table is the routes in force and the pools they lead to: replaced whole,
// so a request sees one table from routing to its last retry.
type table struct {
	routes []Route // sorted: most specific first
	pools  map[string]*pool.Pool
}

func newTable(routes []Route, pools map[string]*pool.Pool) (*table, error) {
	for _, r := range routes {
		if pools[r.Function] == nil {
			return nil, fmt.Errorf("proxy: route to %s has no pool", r.Function)
		}
	}
	return &table{routes: sortRoutes(routes), pools: pools}, nil
}

// SetRoutes puts routes in force, each to its function's pool in pools,
// for requests from now on; those in flight finish as they were routed.
// Neither is changed afterwards by the Handler, nor may be by the caller.
func (h *Handler) SetRoutes(routes []Route, pools map[string]*pool.Pool) error {
	t, err := newTable(routes, pools)
	if err != nil {
		return err
	}
	h.table.Store(t)
	return nil
}

// New returns the ingress handler.
func New(cfg Config) (*Handler, error) {
	t, err := newTable(cfg.Routes, cfg.Pools)
	if err != nil {
		return nil, err
	}
	if cfg.Metrics == nil {
		return nil, errors.New("proxy: Metrics is required")
	}
	if cfg.Ring != nil && cfg.Peers == nil {
		return nil, errors.New("proxy: Peers is required with Ring")
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 10 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 10 * time.Second
	}
	if cfg.WebSocketIdle <= 0 {
		cfg.WebSocketIdle = DefaultWebSocketIdle
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Routes, cfg.Pools = nil, nil
	h := &Handler{cfg: cfg, log: cfg.Logger}
	h.table.Store(t)
	h.proxy = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      &tunnelTransport{h: h},
		FlushInterval:  -1, // flush every write: streaming responses stream
		ModifyResponse: stripFerryHeaders,
		ErrorHandler:   h.errorHandler,
		// Body copy errors: mostly clients that left. Kept out of the
		// way; a response cut under a waiting client is warned of above.
		ErrorLog:   slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
		BufferPool: &copyBuffers{},
	}
	return h, nil
}

// copyBuffers reuses the buffers responses are copied through (without a
// pool, ReverseProxy allocates 32 KiB for each response).
type copyBuffers struct{ p sync.Pool }

func (b *copyBuffers) Get() []byte {
	if buf, ok := b.p.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, 32<<10)
}

func (b *copyBuffers) Put(buf []byte) { b.p.Put(&buf) }

func sortRoutes(rs []Route) []Route {
	out := append([]Route(nil), rs...)
	// Stable insertion sort: few routes, and ties keep config order.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && moreSpecific(out[j], out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func moreSpecific(a, b Route) bool {
	if (a.Host != "") != (b.Host != "") {
		return a.Host != ""
	}
	return len(a.PathPrefix) > len(b.PathPrefix)
}

type ctxKey struct{}

// peerKey marks, in a request's context, a request another replica
// forwarded.
type peerKey struct{}

// ServePeer serves a request another router replica forwarded to this
// one, which owns its function; the caller has authenticated the peer.
// The request is served here, never forwarded again, and keeps the
// X-Forwarded-* headers the first replica set. Where this replica has no
// route for it (its routes lag the peer's), it answers with a nack, so the
// peer serves it itself.
func (h *Handler) ServePeer(w http.ResponseWriter, r *http.Request) {
	h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, true)))
}

// Nack answers a forwarded request this replica will not serve: the
// peer that sent it tries elsewhere.
func Nack(w http.ResponseWriter, reason string) {
	w.Header().Set(tunnel.HeaderNack, reason)
	http.Error(w, "ferry: this router replica did not take the request: "+reason, http.StatusServiceUnavailable)
}

// reqState travels in the request context from ServeHTTP to the transport.
type reqState struct {
	slowBody atomic.Bool // the client's body fell behind its pace: 408
	badBody  atomic.Bool // the client's body was malformed or cut short: 400
	// bodyDue is when the body read blocked right now must end (unix ns),
	// 0 while none is: past it, the client is late, whichever error the
	// deadline surfaces as first (net/http cancels the request from inside
	// that read, which may reach the error handler before the read
	// returns).
	bodyDue  atomic.Int64
	function string
	pool     *pool.Pool // the function's, from the table the request was routed by
	start    time.Time
	queue    time.Duration // time spent waiting for a slot
	appStart time.Time     // when the winning stream was opened
	appEnd   time.Time     // when its response body ended
	attempts int           // streams opened or plain invocations made
	plain    bool          // answered by a plain invocation
	carried  bool          // rode in the event of the invocation launched for it
	fromPeer bool          // forwarded here by another replica
	peer     string        // the replica this one forwarded it to, if any
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	if clean := cleanPath(r.URL.Path); clean != r.URL.Path {
		// Route, and forward, what the app will resolve: otherwise
		// /public/../private (or /public/..%2Fprivate) matched the
		// /public route and reached the app as /private.
		r.URL.Path, r.URL.RawPath = clean, ""
	}
	fromPeer := r.Context().Value(peerKey{}) != nil
	var route *Route
	t := h.table.Load()
	for i := range t.routes {
		if t.routes[i].matches(host, r.URL.Path) {
			route = &t.routes[i]
			break
		}
	}
	if route == nil && fromPeer {
		Nack(w, "no-route")
		return
	}
	if route == nil {
		http.Error(w, fmt.Sprintf("ferry: no route for host %q and path %q", host, r.URL.Path), http.StatusNotFound)
		return
	}
	if n := headerBytes(r); n > h.cfg.MaxHeaderBytes && !fromPeer { // the first replica checked what the client sent
		http.Error(w, fmt.Sprintf("ferry: request headers of %d bytes exceed the limit of %d (431 Request Header Fields Too Large)", n, h.cfg.MaxHeaderBytes), http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if isWebSocket(r) || isH2WebSocket(r) {
		h.serveWebSocket(w, r, route, t.pools[route.Function])
		return
	}
	if what := unsupportedUpgrade(r); what != "" {
		// Refused before an instance is taken: a WebSocket client that
		// reconnects in a loop must not launch an invocation each time.
		// The connection closes: a client may already be sending what it
		// meant for the other protocol.
		w.Header().Set("Connection", "close")
		http.Error(w, fmt.Sprintf("ferry: %s is not supported yet: the tunnel to the function carries HTTP requests only; "+
			"the request did not reach the function", what), http.StatusNotImplemented)
		return
	}
	if len(r.Header["Upgrade"]) > 0 {
		// Only an offer of h2c is left (unsupportedUpgrade), or an Upgrade
		// the Connection header does not name: ignore it,
		// as net/http's own server does. Passed on, the reverse proxy
		// would take the request for an upgrade, which HTTP/2 to the
		// instance cannot carry, and answer 502.
		r.Header.Del("Upgrade")
		r.Header.Del("Http2-Settings")
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		http.Error(w, fmt.Sprintf("ferry: request body of %d bytes exceeds the limit of %d", r.ContentLength, h.cfg.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		return
	}
	st := &reqState{function: route.Function, pool: t.pools[route.Function], start: time.Now(), fromPeer: fromPeer}
	if h.cfg.Ring != nil && !fromPeer {
		defer h.cfg.Ring.Begin(route.Function)()
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &pacedBody{rc: http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes), ctl: http.NewResponseController(w),
			start: st.start, grace: h.cfg.BodyTimeout, st: st}
	}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		// ReverseProxy aborts the handler (panics with ErrAbortHandler)
		// when the response body fails after the status was sent. Every
		// request is counted all the same: one whose client hung up after
		// reading the whole body (as a client does once it has the bytes a
		// Content-Length promised) is the success it saw; one cut short
		// under a waiting client is a 502 to it.
		p := recover()
		status := sw.status
		if p == http.ErrAbortHandler && r.Context().Err() == nil {
			status = http.StatusBadGateway
			h.warns.Warn(h.log, "response cut short: the instance's stream failed mid-body", "function", route.Function, "path", r.URL.Path)
		}
		var app time.Duration
		if !st.appStart.IsZero() {
			end := st.appEnd
			if end.IsZero() {
				end = time.Now()
			}
			app = end.Sub(st.appStart)
		}
		took := time.Since(st.start)
		if st.peer != "" {
			h.cfg.Metrics.Forwarded(route.Function) // the owner counts it as a request
		} else {
			h.cfg.Metrics.Request(route.Function, status, took, app, st.queue)
		}
		if h.log.Enabled(r.Context(), slog.LevelDebug) {
			// Where a slow request's time went, for make bench -logs.
			h.log.Debug("request", "function", route.Function, "status", status, "took_us", took.Microseconds(),
				"queue_us", st.queue.Microseconds(), "app_us", app.Microseconds(), "attempts", st.attempts, "plain", st.plain, "carried", st.carried,
				"peer", st.peer, "from_peer", st.fromPeer)
		}
		if p != nil {
			panic(p)
		}
	}()
	h.proxy.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
}

// cleanPath is p with dot segments resolved and repeated slashes merged,
// rooted, keeping a trailing slash, as net/http's ServeMux cleans.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// headerBytes counts the request line and headers as HTTP/1.1 sends them.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.URL.RequestURI()) + len(r.Host) + 20
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(&url.URL{Scheme: "http", Host: "instance"}) // keeps the inbound path and query
	pr.Out.Host = pr.In.Host                              // the app sees the client's Host
	if pr.In.Context().Value(peerKey{}) != nil {
		// Forwarded by a replica, which set X-Forwarded-* as its client
		// and balancer warranted: kept as they came (ReverseProxy drops
		// them from Out before Rewrite).
		keepForwarded(pr)
	} else if h.trusted(pr.In.RemoteAddr) {
		// Behind a load balancer: the client and scheme it saw, with the
		// balancer appended, as it would itself.
		keepForwarded(pr)
		proto, host := pr.Out.Header.Get("X-Forwarded-Proto"), pr.Out.Header.Get("X-Forwarded-Host")
		pr.SetXForwarded() // appends the balancer to X-Forwarded-For; sets proto and host from this hop
		if proto != "" {
			pr.Out.Header.Set("X-Forwarded-Proto", proto)
		}
		if host != "" {
			pr.Out.Header.Set("X-Forwarded-Host", host)
		}
	} else {
		pr.SetXForwarded()
	}
	for k := range pr.Out.Header {
		if tunnel.IsProtocolHeader(k) {
			pr.Out.Header.Del(k) // clients do not speak the tunnel protocol
		}
	}
}

// keepForwarded copies the inbound X-Forwarded-* headers to the outbound
// request.
func keepForwarded(pr *httputil.ProxyRequest) {
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
		if v := pr.In.Header.Values(k); len(v) > 0 {
			pr.Out.Header[k] = v
		}
	}
}

// trusted reports whether remote (host:port) is a trusted proxy.
func (h *Handler) trusted(remote string) bool {
	if len(h.cfg.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// stripFerryHeaders keeps the tunnel protocol's headers from the client.
func stripFerryHeaders(resp *http.Response) error {
	for _, h := range []http.Header{resp.Header, resp.Trailer} {
		for k := range h {
			if tunnel.IsProtocolHeader(k) {
				h.Del(k)
			}
		}
	}
	return nil
}

// Errors the transport returns; errorHandler turns each into a status.
var (
	errNackedOut     = errors.New("every instance tried refused the request")
	errNotReplayable = errors.New("an instance refused the request and its body was too large to send again")
)

// startedError is a failure after the request may have reached the app.
type startedError struct {
	err   error
	class string // Lambda's error type, when an invocation said it; clients may read it
}

func (e *startedError) Error() string { return e.err.Error() }
func (e *startedError) Unwrap() error { return e.err }

func (h *Handler) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(ctxKey{}).(*reqState)
	fn := ""
	if st != nil {
		fn = st.function
	}
	var mbe *http.MaxBytesError
	var started *startedError
	var failing *pool.FailingError
	switch {
	case st != nil && (st.slowBody.Load() || st.bodyLate()):
		// The client's fault, not the instance's: no 5xx, no warning.
		w.Header().Set("Connection", "close")
		http.Error(w, fmt.Sprintf("ferry: the request body did not arrive in time (%v, then at least %d bytes a second)", h.cfg.BodyTimeout, bodyMinRate), http.StatusRequestTimeout)
	case r.Context().Err() != nil:
		// The client went away; its stream was cancelled. Nobody to answer.
		w.WriteHeader(499) // recorded in metrics only; the connection is gone
		return
	case st != nil && st.badBody.Load():
		// The client's fault too (a bad chunk size, a body shorter than
		// its Content-Length): no 5xx, no warning.
		w.Header().Set("Connection", "close")
		http.Error(w, "ferry: the request body was malformed or cut short", http.StatusBadRequest)
	case errors.As(err, &mbe):
		http.Error(w, fmt.Sprintf("ferry: request body exceeds the limit of %d bytes", mbe.Limit), http.StatusRequestEntityTooLarge)
	case errors.As(err, &failing):
		// The class, not the message: the function's own error text may
		// say more than a client should read (the router's log has it).
		w.Header().Set("Retry-After", "5")
		http.Error(w, fmt.Sprintf("ferry: function %s is failing to start (%s); ferry keeps trying in the background", fn, failing.Class), http.StatusBadGateway)
	case errors.Is(err, pool.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("ferry: too many requests are waiting for function %s; try again shortly", fn), http.StatusServiceUnavailable)
	case errors.Is(err, pool.ErrNoCapacity), errors.Is(err, errNackedOut), errors.Is(err, errNotReplayable):
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("ferry: no instance of function %s could take this request within %v (%v)", fn, h.cfg.QueueTimeout, err), http.StatusServiceUnavailable)
	case errors.Is(err, pool.ErrClosed):
		http.Error(w, "ferry: the router is shutting down", http.StatusServiceUnavailable)
	case errors.As(err, &started):
		// What happened, not the error's text (addresses, stream ids, the
		// function's own messages): the log has that.
		h.warns.Warn(h.log, "instance failed mid-request", "function", fn, "path", r.URL.Path, "err", err)
		msg := "ferry: the function instance failed after the request reached it; it was not retried"
		if started.class != "" {
			msg += " (" + started.class + ")"
		}
		http.Error(w, msg, http.StatusBadGateway)
	default:
		h.warns.Warn(h.log, "proxy error", "function", fn, "path", r.URL.Path, "err", err)
		http.Error(w, fmt.Sprintf("ferry: the request could not be passed to function %s", fn), http.StatusBadGateway)
	}
}

// tunnelTransport places a request on an instance and retries it elsewhere
// when the instance proves it never processed it.
type tunnelTransport struct{ h *Handler }

func (t *tunnelTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(ctxKey{}).(*reqState)
	p := st.pool
	body, err := newReplayBody(req.Body)
	if err != nil {
		return nil, err
	}
	qctx, cancel := context.WithTimeout(req.Context(), t.h.cfg.QueueTimeout)
	defer cancel()

	if t.h.cfg.Ring != nil && !st.fromPeer {
		if resp, err, done := t.forward(req, body, st); done {
			return resp, err
		}
	}
	eligible := plainEligible(req, body)
	canPlain := t.h.cfg.Plain != nil && eligible
	// A request that can travel in an invoke payload rides in the event
	// of an invocation launched for it, bound to it (no launch is left
	// surplus), and is claimed on its tunnel.
	var event func() ([]byte, error)
	if eligible && t.h.cfg.Carry {
		event = func() ([]byte, error) { return plainEvent(req, body.buf, req.RemoteAddr) }
	}
	var avoid *pool.Lease
	for attempt := 1; ; attempt++ {
		waitStart := time.Now()
		// Nowhere else to send it after this: the instance must take it.
		lastTry := attempt >= t.h.cfg.MaxAttempts || body.streams()
		lease, err := p.AcquireCarriable(qctx, avoid, canPlain, lastTry, event)
		st.queue += time.Since(waitStart)
		if err != nil {
			return nil, err
		}
		st.attempts = attempt
		if lease.Plain() {
			st.plain = true
			return t.plain(req, body.buf, st, lease)
		}
		out := req.Clone(req.Context())
		switch {
		case lease.Claim():
			// The instance holds the request from its event: the
			// stream claims it, and the bootstrap runs it then (a claim
			// never processed leaves it unrun, retried as any stream).
			st.carried = true
			out.Body, out.ContentLength = nil, 0
			out.Header.Set(tunnel.HeaderClaim, "1")
		default:
			out.Body = body.attempt()
			if out.Body == nil {
				out.ContentLength = 0
			}
			if lastTry {
				// The instance takes it even if it would rather not for
				// CPU.
				out.Header.Set(tunnel.HeaderLastTry, "1")
			}
			if lease.DropCarried() {
				out.Header.Set(tunnel.HeaderDropCarried, "1")
			}
		}
		st.appStart = time.Now()
		resp, err := lease.Conn().RoundTrip(out)
		if err != nil {
			lease.Release()
			if tunnel.Unprocessed(err) && body.replayable() && attempt < t.h.cfg.MaxAttempts {
				// Refused without a hint of when it will have room
				// (GOAWAY, REFUSED_STREAM, closed): no waiting for it.
				lease.NoHold()
				avoid = lease
				continue
			}
			if tunnel.Unprocessed(err) {
				if !body.replayable() {
					return nil, errNotReplayable
				}
				return nil, errNackedOut // refused by every instance it was tried on
			}
			return nil, &startedError{err: err}
		}
		if reason, ok := tunnel.IsNack(resp); ok {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			lease.Release()
			t.h.cfg.Metrics.Nack(st.function)
			if reason != tunnel.NackCPU {
				t.h.log.Debug("instance nacked", "function", st.function, "reason", reason)
				lease.NoHold()
			}
			switch {
			case !body.replayable():
				return nil, errNotReplayable
			case attempt >= t.h.cfg.MaxAttempts:
				return nil, errNackedOut
			}
			avoid = lease
			continue
		}
		resp.Body = &leasedBody{ReadCloser: resp.Body, lease: lease, st: st, resp: resp, headers: time.Now()}
		return resp, nil
	}
}

// forward sends req to the replica that owns its function, following
// the ring's plan: a peer that cannot be reached, refuses the stream or
// nacks the request is passed over for the next; a request a peer may have
// started is never sent again. done is false where the plan comes to this
// replica: the caller serves the request here.
func (t *tunnelTransport) forward(req *http.Request, body *replayBody, st *reqState) (_ *http.Response, _ error, done bool) {
	if body.streams() {
		// A body too large to keep could not be sent on after a peer
		// refused it having read past the kept part: served here.
		return nil, nil, false
	}
	for _, peer := range t.h.cfg.Ring.Plan(st.function) {
		if peer == "" {
			return nil, nil, false
		}
		out := req.Clone(req.Context())
		out.Body = body.attempt()
		if out.Body == nil {
			out.ContentLength = 0
		}
		sent := t.h.cfg.Ring.Sending(peer)
		st.peer = peer // the owner counts the request from here on
		resp, err := t.h.cfg.Peers.RoundTrip(peer, out)
		if err != nil {
			sent()
			if req.Context().Err() != nil {
				// The client left: the peer is not to blame, and
				// nobody waits for another try.
				return nil, err, true
			}
			unreached := ring.Unreached(err)
			if unreached {
				t.h.cfg.Ring.Down(peer)
			}
			if !unreached && !tunnel.Unprocessed(err) {
				return nil, &startedError{err: fmt.Errorf("forwarded to router replica %s: %w", peer, err)}, true
			}
			st.peer = "" // it never got there
			if !body.replayable() {
				return nil, errNotReplayable, true
			}
			t.h.log.Debug("peer not reached; trying the next owner", "function", st.function, "peer", peer, "err", err)
			continue
		}
		if reason, ok := tunnel.IsNack(resp); ok {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			sent()
			st.peer = "" // it did not take it
			t.h.log.Debug("peer nacked; trying the next owner", "function", st.function, "peer", peer, "reason", reason)
			if !body.replayable() {
				return nil, errNotReplayable, true
			}
			continue
		}
		resp.Body = &doneBody{ReadCloser: resp.Body, done: sent}
		return resp, nil, true
	}
	return nil, nil, false
}

// doneBody calls done once, when the body ends or is closed.
type doneBody struct {
	io.ReadCloser
	done func()
	once sync.Once
}

func (b *doneBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.done)
	}
	return n, err
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// plain sends req as one plain invocation, which holds lease until it
// ends.
func (t *tunnelTransport) plain(req *http.Request, body []byte, st *reqState, lease *pool.Lease) (*http.Response, error) {
	defer lease.Release()
	event, err := plainEvent(req, body, req.RemoteAddr)
	if err != nil {
		return nil, err
	}
	st.appStart = time.Now()
	payload, err := t.h.cfg.Plain(req.Context(), st.function, event)
	st.appEnd = time.Now()
	var ie *invoke.Error
	switch {
	case errors.As(err, &ie) && !ie.Started:
		return nil, fmt.Errorf("%w: Lambda refused the invocation (%s)", pool.ErrNoCapacity, ie.Class)
	case errors.As(err, &ie):
		if ie.Class == "Ferry.ResponseTooLarge" {
			lease.Answered(true) // tunnels for a while: they carry any size
		}
		t.h.warns.Warn(t.h.log, "plain invocation failed", "function", st.function, "path", req.URL.Path, "err", err)
		return nil, &startedError{err: fmt.Errorf("the plain invocation failed (%s)", ie.Class), class: ie.Class}
	case err != nil:
		return nil, &startedError{err: err}
	}
	resp, err := plainResponse(req, payload)
	if err != nil {
		return nil, &startedError{err: err}
	}
	lease.Answered(resp.ContentLength > plainUnsafeBytes) // near the limit: tunnels for a while
	return resp, nil
}

// leasedBody releases the instance slot when the response ends.
type leasedBody struct {
	io.ReadCloser
	lease   *pool.Lease
	st      *reqState
	resp    *http.Response
	headers time.Time // when the response's headers came
	n       int64
	once    sync.Once
}

func (b *leasedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.done()
	}
	return n, err
}

func (b *leasedBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

func (b *leasedBody) done() {
	b.once.Do(func() {
		b.st.appEnd = time.Now()
		b.lease.Answered(plainUnsafe(b.resp, b.n, b.st.appEnd.Sub(b.headers)))
		b.lease.Release()
	})
}

// bodyLate reports whether the request's body is past its pace deadline.
func (st *reqState) bodyLate() bool {
	due := st.bodyDue.Load()
	return due != 0 && time.Now().UnixNano() >= due
}

// bodyMinRate is the pace a request body must keep after BodyTimeout.
const bodyMinRate = 16 << 10

// pacedBody bounds how long a client may take to send its body: each read
// must end by start + grace + received/bodyMinRate seconds. A body
// trickled a byte at a time (an attack, or a client stuck) then fails
// instead of holding a goroutine, and an instance slot, for as long as it
// trickles.
type pacedBody struct {
	rc       io.ReadCloser
	ctl      *http.ResponseController
	start    time.Time
	grace    time.Duration
	received int64
	st       *reqState
}

func (b *pacedBody) Read(p []byte) (int, error) {
	deadline := b.start.Add(b.grace + time.Duration(b.received)*time.Second/bodyMinRate)
	if b.ctl.SetReadDeadline(deadline) == nil { // where the connection cannot, the body is not paced
		b.st.bodyDue.Store(deadline.UnixNano())
	}
	n, err := b.rc.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.st.slowBody.Store(true) // before the read stops counting as blocked
	}
	b.st.bodyDue.Store(0) // no read blocked now: what fails from here says itself
	b.received += int64(n)
	switch {
	case err == io.EOF:
		// The body is in. The deadline must not outlive it: net/http's
		// background read of the connection would time out and cancel a
		// long answer to a prompt upload.
		b.ctl.SetReadDeadline(time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		// slowBody is stored above.
	case err != nil && !errors.As(err, new(*http.MaxBytesError)):
		// Not io.EOF: a body cut short must not pass for a whole one
		// (io.ReadFull would take io.ErrUnexpectedEOF for its end).
		b.st.badBody.Store(true)
		return n, &badBodyError{err}
	}
	return n, err
}

// badBodyError is a client's body that failed to read.
type badBodyError struct{ err error }

func (e *badBodyError) Error() string { return "request body: " + e.err.Error() }
func (e *badBodyError) Unwrap() error { return e.err }

func (b *pacedBody) Close() error {
	b.ctl.SetReadDeadline(time.Time{})
	return b.rc.Close()
}

// unsupportedUpgrade names what r asks for that the tunnel cannot carry,
// or returns "": a protocol upgrade other than a WebSocket's (which
// serveWebSocket carries, and which is tested first), and CONNECT (which
// HTTP/2 clients use for WebSockets, RFC 8441). An upgrade to h2c only
// offers HTTP/2: the server may ignore it and answer over HTTP/1.1, as
// net/http does.
func unsupportedUpgrade(r *http.Request) string {
	if r.Method == http.MethodConnect {
		if p := r.Header.Get(":protocol"); p != "" {
			return fmt.Sprintf("CONNECT for %q (a WebSocket over HTTP/2)", p)
		}
		return "CONNECT"
	}
	up := strings.Join(r.Header.Values("Upgrade"), ",") // every field line
	if strings.TrimSpace(up) == "" || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		return ""
	}
	for p := range strings.SplitSeq(up, ",") {
		p = strings.TrimSpace(p)
		if p == "" || strings.EqualFold(p, "h2c") {
			continue
		}
		return fmt.Sprintf("an upgrade to %q", clipToken(p))
	}
	return ""
}

// clipToken bounds a client's token quoted back in an error.
func clipToken(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// replayBody keeps a small request body in memory so that a nacked request
// can be sent again. A body over replayLimit streams: its first
// replayLimit+1 bytes are kept, and it can still be sent again as long as
// no try has read past them (a stream refused at once, say, by an instance
// that was just ending); once one has, it goes once.
type replayBody struct {
	buf  []byte        // the whole body, when it fit
	head []byte        // its first bytes, when it did not
	rest io.ReadCloser // the rest of it, which one try at most reads

	mu      sync.Mutex
	touched bool         // a try read from rest
	cur     *streamedTry // the try that may read rest
}

func newReplayBody(rc io.ReadCloser) (*replayBody, error) {
	if rc == nil || rc == http.NoBody {
		return &replayBody{}, nil
	}
	head := make([]byte, replayLimit+1)
	n, err := io.ReadFull(rc, head)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		rc.Close()
		return &replayBody{buf: head[:n]}, nil
	case err != nil:
		rc.Close()
		return nil, err
	}
	return &replayBody{head: head[:n], rest: rc}, nil
}

// streams reports whether the body is too large to keep whole: an
// instance it is sent to is told it is the last try (a nack of it could
// seldom be sent elsewhere).
func (b *replayBody) streams() bool { return b.rest != nil }

func (b *replayBody) replayable() bool {
	if b.rest == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.touched
}

// attempt returns the body for one try, or nil for no body. A streamed
// body's earlier try is abandoned: it can no longer read the rest.
func (b *replayBody) attempt() io.ReadCloser {
	if b.rest != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.cur != nil {
			b.cur.abandoned = true
		}
		b.cur = &streamedTry{b: b, head: bytes.NewReader(b.head)}
		return b.cur
	}
	if b.buf == nil {
		return nil
	}
	return io.NopCloser(bytes.NewReader(b.buf))
}

// errTryAbandoned is what a streamed body's abandoned try reads.
var errTryAbandoned = errors.New("request body: this try was abandoned for another")

// streamedTry is one try's view of a streamed body: the kept head, then
// the rest, unless a later try took over first.
type streamedTry struct {
	b         *replayBody
	head      *bytes.Reader
	abandoned bool // guarded by b.mu
}

func (t *streamedTry) Read(p []byte) (int, error) {
	if t.head.Len() > 0 {
		return t.head.Read(p)
	}
	t.b.mu.Lock()
	if t.abandoned {
		t.b.mu.Unlock()
		return 0, errTryAbandoned
	}
	t.b.touched = true
	t.b.mu.Unlock()
	return t.b.rest.Read(p)
}

// Close closes the rest only for the try reading it (the transport closes
// a body to end a read blocked in it); the server closes it anyway when
// the request ends.
func (t *streamedTry) Close() error {
	t.b.mu.Lock()
	reading := t.b.touched && !t.abandoned
	t.b.mu.Unlock()
	if reading {
		return t.b.rest.Close()
	}
	return nil
}

// statusWriter remembers the status sent to the client, for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }
