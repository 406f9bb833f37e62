// Package server assembles ferry-router: the tunnel listener, one pool per
// function, the ingress proxy, the admin endpoints and metrics, with a
// graceful shutdown.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ferryrun/ferry/internal/loglimit"
	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/router/config"
	"github.com/ferryrun/ferry/router/framing"
	"github.com/ferryrun/ferry/router/invoke"
	"github.com/ferryrun/ferry/router/metrics"
	"github.com/ferryrun/ferry/router/pool"
	"github.com/ferryrun/ferry/router/proxy"
	"github.com/ferryrun/ferry/router/ring"
)

// Listeners are the router's ports: Peer only where replicas share
// functions (config.Config.Ring). The router does not listen on its own;
// Run closes them.
type Listeners struct {
	Ingress, Tunnel, Admin, Peer net.Listener
}

// Router is a configured ferry-router.
type Router struct {
	// static after New
	cfg     config.Config
	log     *slog.Logger
	pin     string
	tunnels *tunnel.Server
	inv     *invoke.Invoker
	ingress *proxy.Handler
	metrics *metrics.Recorder
	ring    *ring.Ring      // nil: no peers
	peers   *ring.Transport // with ring
	peerKey string          // with ring

	// pools holds a pool for every function ever routed, replaced whole
	// when routes add one (a function whose routes go keeps its pool: its
	// instances finish what they hold and idle out).
	pools atomic.Pointer[map[string]*pool.Pool]
	// serving: Run has started serving tunnels, so instances may be
	// launched ahead of requests (the minimum of live instances).
	serving  atomic.Bool
	routesMu sync.Mutex  // serializes route changes
	routes   routesState // guarded by routesMu
	// routesRead: the routes parameter, if any, has been read (or found
	// missing) at least once; until then /readyz says not ready, for at
	// most routesGrace after start.
	routesRead atomic.Bool
	started    time.Time

	shuttingDown atomic.Bool
	health       lambdaHealth // whether Lambda takes this router's invocations
	refusals     loglimit.Limiter
	acceptFails  loglimit.Limiter // the ingress listener's accept errors
}

// New builds a router. api is the Lambda client; peers lists the replicas
// sharing functions with this one where cfg.Ring() (cfg.PeerAdvertise
// must then be resolved), and is nil otherwise; sinks receive the metrics
// once per cfg.MetricsInterval.
func New(cfg config.Config, api invoke.API, log *slog.Logger, peers ring.Source, sinks ...metrics.Sink) (*Router, error) {
	cert, err := certificate(cfg)
	if err != nil {
		return nil, err
	}
	secret := cfg.TokenSecret
	if secret == nil {
		secret = make([]byte, 32)
		rand.Read(secret)
		log.Info("token secret generated for this process; " + config.EnvTokenSecret + " sets one")
	}
	issuer, err := tunnel.NewIssuer(secret, tokenTTL(cfg.LaunchTimeout), nil)
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: log, pin: tunnel.Pin(cert.Leaf), metrics: metrics.New(cfg.MetricsInterval, log, sinks...),
		started: time.Now(), routes: routesState{options: map[string]config.Route{}}, health: lambdaHealth{after: cfg.UnreadyAfter}}
	r.routesRead.Store(cfg.RoutesParameter == "")
	r.pools.Store(&map[string]*pool.Pool{})

	inv, err := invoke.New(invoke.Config{
		API: api, Issuer: issuer, Router: cfg.Advertise, Pin: r.pin, Logger: log,
		OnResult: func(res invoke.Result) {
			r.health.ok() // Lambda ran it, whatever the function said
			inv := metrics.Invocation{BilledMs: res.BilledMs, CPU: res.CPU, Cold: res.Cold,
				Background: time.Duration(res.BackgroundUs) * time.Microsecond}
			busy := time.Duration(res.BusyUs)*time.Microsecond + inv.Background // the app's time, alone or not
			if res.Ended != "plain" && res.Err == nil {
				inv.Idle = max(time.Duration(res.BilledMs)*time.Millisecond-busy, 0)
			}
			r.metrics.Invocation(res.Function, inv)
			if p := r.pool(res.Function); p != nil && res.Err == nil && res.Ended != "plain" {
				p.Ended(time.Duration(res.BilledMs)*time.Millisecond, busy,
					time.Duration(res.LingerUs)*time.Microsecond, res.Requests, res.Ended == "idle")
			}
		},
		OnThrottle:    r.metrics.Throttle,
		OnUnavailable: func(string, error) { r.health.failed() },
	})
	if err != nil {
		return nil, err
	}
	r.inv = inv
	if cfg.Ring() {
		r.peerKey = ring.Key(secret)
		r.peers = ring.NewTransport(r.peerKey)
		r.ring, err = ring.New(ring.Config{
			Self: cfg.PeerAdvertise, Source: peers, Probe: r.peers.Probe, Every: ringEvery, OwnerConcurrency: cfg.OwnerConcurrency,
			Logger: log, OnChange: func([]string) {
				r.metrics.RingSize(len(r.ring.Live())) // now, not as it was when the change was seen
				// Minimums follow ownership.
				r.routesMu.Lock()
				r.applyMinimumsLocked()
				r.routesMu.Unlock()
			},
		})
		if err != nil {
			return nil, err
		}
		r.metrics.RingSize(1)
	}
	routes, pools, err := r.table(cfg.Routes)
	if err != nil {
		return nil, err
	}
	r.pools.Store(&pools)
	r.routes.minimums = minimums(cfg.Routes)
	r.ingress, err = proxy.New(proxy.Config{
		Routes: routes, Pools: pools, QueueTimeout: cfg.QueueTimeout, MaxBodyBytes: cfg.MaxBodyBytes,
		MaxHeaderBytes: cfg.MaxHeaderBytes, TrustedProxies: cfg.TrustedProxies, BodyTimeout: cfg.BodyTimeout,
		WebSocketIdle: cfg.WebSocketIdle, Ring: r.ring, Peers: r.peers,
		Plain: inv.Plain, Carry: cfg.Carry, Metrics: r.metrics, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	r.tunnels, err = tunnel.NewServer(tunnel.ServerConfig{
		TLS: tunnel.ServerTLSConfig(cert),
		Authenticate: func(_ context.Context, h tunnel.Hello) (tunnel.Claims, error) {
			c, err := issuer.Redeem(h.Token, h.FunctionARN)
			if err == nil && r.pool(c.Function) == nil {
				err = fmt.Errorf("function %s has no route on this router", c.Function)
			}
			return c, err
		},
		// OnConn runs once the tunnel is fully established (TLS, hello,
		// SETTINGS): only then may the instance join its pool.
		OnConn: func(c *tunnel.Conn) {
			r.health.ok()
			r.pool(c.Claims().Function).Add(c)
		},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// regionFailing says why this router should take no traffic because the
// region's Lambda is failing, or returns "": its own calls, or a peer's
// (owners make a function's calls), have failed for the while
// FERRY_ROUTER_UNREADY_AFTER sets, and it has no live instance, which
// would show the region still serving.
func (r *Router) regionFailing() string {
	now := time.Now()
	d, own := r.health.failing(now)
	// A peer's failures are the region's unless this replica's own calls
	// work: one replica cut off (its zone's NAT) must not take the others
	// out of service.
	peers := r.ring != nil && r.health.after > 0 && !r.health.recentlyOK(now) && r.ring.PeersFailing()
	if (!own && !peers) || r.live() {
		return ""
	}
	if own {
		return fmt.Sprintf("the Lambda API has refused or failed every invocation for %v", d.Round(time.Second))
	}
	return "the Lambda API has refused or failed every invocation of a router replica that owns functions"
}

// live reports whether any function has a live instance here: proof the
// region's Lambda serves.
func (r *Router) live() bool {
	for _, p := range *r.pools.Load() {
		if n, _ := p.InFlight(); n > 0 {
			return true
		}
	}
	return false
}

// routesGrace bounds how long /readyz waits for the routes parameter.
const routesGrace = time.Minute

// pool is fn's pool, or nil for a function never routed.
func (r *Router) pool(fn string) *pool.Pool { return (*r.pools.Load())[fn] }

// table is the proxy's routes for rs and the pools they lead to: the pools
// of today, and a new one for each function that has none yet.
func (r *Router) table(rs []config.Route) ([]proxy.Route, map[string]*pool.Pool, error) {
	pools := maps.Clone(*r.pools.Load())
	routes := make([]proxy.Route, 0, len(rs))
	for _, rt := range rs {
		routes = append(routes, proxy.Route{Function: rt.Function, Host: rt.Host, PathPrefix: rt.PathPrefix})
		if pools[rt.Function] != nil {
			continue
		}
		pc := pool.Config{
			Function: rt.Function, MaxConcurrency: r.cfg.MaxConcurrency, Policy: r.cfg.Policy,
			QueueLimit: r.cfg.QueueLimit, MaxInstances: r.cfg.MaxInstances, LaunchTimeout: r.cfg.LaunchTimeout,
			MaxLinger: r.cfg.IdleLinger, Plain: r.cfg.Plain, Launcher: r.inv, Logger: r.log,
			OnLaunchFailure: func(string) { r.metrics.LaunchFailure(rt.Function) },
		}
		if rt.MaxConcurrency > 0 {
			pc.MaxConcurrency = rt.MaxConcurrency
		}
		if rt.Policy != "" {
			pc.Policy = rt.Policy
		}
		if rt.Plain != "" {
			pc.Plain = rt.Plain == "auto"
		}
		p, err := pool.New(pc)
		if err != nil {
			return nil, nil, err
		}
		pools[rt.Function] = p
		r.routes.options[rt.Function] = rt
	}
	return routes, pools, nil
}

func certificate(cfg config.Config) (tls.Certificate, error) {
	if cfg.TLSCert == "" {
		return tunnel.GenerateCertificate(365 * 24 * time.Hour)
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading tunnel certificate: %w", err)
	}
	return cert, nil
}

// tokenTTL is how long a dial-back token lives: at least 30 s (invoke
// retries, then Lambda's 10 s init) and never less than the launch timeout,
// the time the router waits for an instance to dial back, so an instance
// whose init is slow but within that timeout is not refused at the door.
// Each token is still single-use and bound to its function.
func tokenTTL(launch time.Duration) time.Duration { return max(30*time.Second, launch) }

// Pin returns the tunnel certificate's pin.
func (r *Router) Pin() string { return r.pin }

// Run serves until ctx ends, then shuts down gracefully: it stops taking
// client requests, lets those in flight finish within the shutdown timeout,
// then drains every tunnel.
func (r *Router) Run(ctx context.Context, ls Listeners) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true) // h2c on the same port
	ingress := &http.Server{
		Handler: r.framed(r.ingress), Protocols: &protos, MaxHeaderBytes: r.cfg.MaxHeaderBytes,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
		// Every request the server reads reaches the handler, or the
		// connection closes: framing.Check counts on it.
		ConnContext: framing.ConnContext, DisableGeneralOptionsHandler: true,
	}
	admin := &http.Server{Handler: r.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	var peer *http.Server
	if r.ring != nil {
		var h2c http.Protocols
		h2c.SetUnencryptedHTTP2(true)
		peer = &http.Server{Handler: r.peerHandler(), Protocols: &h2c, ReadHeaderTimeout: 10 * time.Second,
			// HTTP/2 counts 32 bytes a field where the ingress counts 4, and
			// a peer adds X-Forwarded-* and its key.
			MaxHeaderBytes: 2*r.cfg.MaxHeaderBytes + 64<<10,
			IdleTimeout:    10 * time.Minute, ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
			// A body waits unread while its request waits for an instance:
			// a small window per stream keeps one upload from holding the
			// connection's, which every request from that peer shares.
			HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000,
				MaxReceiveBufferPerStream: 256 << 10, MaxReceiveBufferPerConnection: 64 << 20}}
	}

	tunnelCtx, stopTunnels := context.WithCancel(context.Background())
	defer stopTunnels()
	metricsCtx, stopMetrics := context.WithCancel(context.Background())
	metricsDone := make(chan struct{})
	go func() { r.metrics.Run(metricsCtx); close(metricsDone) }()

	g, gctx := errgroup.WithContext(ctx)
	clientConns := clientConnLimit(openFileLimit())
	clientLn := newWatchedListener(ls.Ingress, r, clientConns)
	// net/http reads a head of up to MaxHeaderBytes plus its 4 KiB buffer.
	g.Go(func() error {
		return serveHTTP(ingress, framing.Listener(clientLn, r.cfg.MaxHeaderBytes+4096))
	})
	g.Go(func() error { return serveHTTP(admin, ls.Admin) })
	if peer != nil {
		g.Go(func() error { return serveHTTP(peer, ls.Peer) })
		// Members listed and probed every ringEvery, from one period after
		// the first Refresh below.
		g.Go(func() error { every(gctx, ringEvery, func() { r.ring.Refresh(gctx) }); return nil })
	}
	g.Go(func() error { return r.tunnels.Serve(tunnelCtx, ls.Tunnel) })
	g.Go(func() error { r.sampleInFlight(gctx); return nil })
	if r.ring != nil {
		// Learn the ring before warming anything: alone, this replica
		// would take itself for every function's owner.
		r.ring.Refresh(gctx)
	}
	// Tunnels are served from here on: warm the functions that keep a
	// minimum of live instances (the pre-warm at deploy: a new router
	// task warms them before its first request).
	r.routesMu.Lock()
	r.serving.Store(true)
	r.applyMinimumsLocked()
	r.routesMu.Unlock()
	g.Go(func() error { r.followMinimumHours(gctx); return nil })
	g.Go(func() error {
		<-gctx.Done()
		r.shuttingDown.Store(true)
		// No more warm instances: those live finish what they hold and
		// close; nothing launches ahead of requests any more.
		r.routesMu.Lock()
		r.serving.Store(false)
		for _, p := range *r.pools.Load() {
			p.SetMinInstances(0)
		}
		r.routesMu.Unlock()
		r.log.Info("shutting down", "timeout", r.cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
		defer cancel()
		if r.ring != nil {
			// Leave the ring first: peers learn it at their next probe and
			// stop forwarding here, and what clients still send here goes
			// to the other owners, while this replica's instances finish.
			r.ring.Leave()
			select {
			case <-time.After(leaveGrace):
			case <-sctx.Done():
			}
		}
		servers := []*http.Server{ingress}
		if peer != nil {
			servers = append(servers, peer)
		}
		var wg sync.WaitGroup
		for _, srv := range servers {
			wg.Go(func() {
				if err := srv.Shutdown(sctx); err != nil {
					r.log.Warn("requests still running at the shutdown timeout", "err", err)
					srv.Close()
				}
			})
		}
		wg.Wait()
		if r.peers != nil {
			r.peers.Close()
		}
		for _, p := range *r.pools.Load() {
			p.Close(sctx)
		}
		stopTunnels()
		admin.Close()
		return nil
	})
	r.log.Info("ferry-router serving", "ingress", ls.Ingress.Addr().String(), "tunnel", ls.Tunnel.Addr().String(),
		"admin", ls.Admin.Addr().String(), "advertise", r.cfg.Advertise, "pin", r.pin, "client_conns", clientConns)
	err := g.Wait()
	stopMetrics()
	<-metricsDone
	return err
}

// ringEvery is how often a replica lists and probes its peers.
const ringEvery = time.Second

// leaveGrace is how long a replica leaving the ring keeps serving before
// it stops taking requests: a little over the peers' probe period, so they
// stop forwarding to it first.
const leaveGrace = ringEvery * 3 / 2

// peerHandler serves the peer port: probes, and requests other replicas
// forward, from replicas holding the peer key only.
func (r *Router) peerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !ring.Authentic(req, r.peerKey) {
			r.refusals.Warn(r.log, "peer request refused: no valid peer key", "remote", req.RemoteAddr)
			http.Error(w, "ferry: not a router replica of this deployment", http.StatusForbidden)
			return
		}
		req.Header.Del(ring.HeaderKey)
		probe := req.Header.Get(ring.HeaderProbe) != ""
		switch {
		case probe && r.ring.Leaving():
			http.Error(w, "leaving", http.StatusServiceUnavailable)
		case probe:
			if _, failing := r.health.failing(time.Now()); failing && !r.live() {
				// Its own calls only, never a peer's (which would echo),
				// and not while its instances serve.
				io.WriteString(w, ring.ProbeFailing+"\n")
				return
			}
			io.WriteString(w, "ok\n")
		case r.ring.Leaving():
			proxy.Nack(w, "leaving")
		default:
			r.ingress.ServePeer(w, req)
		}
	})
}

// followMinimumHours puts each function's minimum in force as its
// min_instances_hours begin and end, until ctx ends.
func (r *Router) followMinimumHours(ctx context.Context) {
	every(ctx, 30*time.Second, func() {
		r.routesMu.Lock()
		r.applyMinimumsLocked()
		r.routesMu.Unlock()
	})
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// clientConnLimit is how many client connections the router holds at once,
// given its limit on open files (0: none known, and none is set): three
// quarters of them, leaving at least keptFiles. The rest stay for what
// serving them needs: its listeners, tunnels and invocations (two
// descriptors an instance). Past it, new clients wait in the listen
// backlog. Without it, clients queued for a function took every
// descriptor, so no tunnel could be accepted and no instance could come
// for them until they timed out: a router at its limit stalled for the
// whole queue timeout after the cause had gone. (It bounds connections,
// not requests: an HTTP/2 client may queue many on one; the function's
// queue limit bounds those.)
func clientConnLimit(openFiles int) int {
	if openFiles <= 0 {
		return 0
	}
	return max(min(openFiles*3/4, openFiles-keptFiles), 1)
}

// keptFiles is the fewest descriptors kept from clients.
const keptFiles = 64

// watchedListener holds the ingress to limit client connections at once
// (none if 0), and says when it does: past it, new clients wait in the
// listen backlog. It also says when the listener cannot accept: net/http
// backs off and retries an accept error (out of file descriptors, say) in
// silence, while clients wait in the backlog.
type watchedListener struct {
	net.Listener
	r     *Router
	slots chan struct{} // one per client connection held; nil: no limit
	done  chan struct{} // closed by Close: a held Accept returns
	close sync.Once
}

func newWatchedListener(ln net.Listener, r *Router, limit int) *watchedListener {
	l := &watchedListener{Listener: ln, r: r, done: make(chan struct{})}
	if limit > 0 {
		l.slots = make(chan struct{}, limit)
	}
	return l
}

func (l *watchedListener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		default:
			l.r.acceptFails.Warn(l.r.log, "client connections at their limit; new clients wait in the listen backlog",
				"limit", cap(l.slots))
			select {
			case l.slots <- struct{}{}:
			case <-l.done:
				return nil, net.ErrClosed
			}
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.slots != nil {
			<-l.slots
		}
		if !errors.Is(err, net.ErrClosed) {
			l.r.acceptFails.Warn(l.r.log, "accepting client connections failed; retrying (clients wait meanwhile)", "err", err)
		}
		return nil, err
	}
	if l.slots == nil {
		return c, nil
	}
	return &slotConn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
}

func (l *watchedListener) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// slotConn gives its slot back when it is closed.
type slotConn struct {
	net.Conn
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// framed refuses, with 400, requests whose framing is ambiguous (request
// smuggling's shape), and closes their connection so that nothing in their
// body is read as a request.
func (r *Router) framed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if v := framing.Check(req.Context(), req.Method, req.RequestURI, req.ProtoMajor); v != "" {
			r.refusals.Warn(r.log, "request refused", "reason", string(v), "remote", req.RemoteAddr)
			w.Header().Set("Connection", "close")
			http.Error(w, "ferry: request refused: "+string(v), http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, req)
	})
}

func serveHTTP(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// sampleInFlight feeds InFlightPerInstance once a second.
func (r *Router) sampleInFlight(ctx context.Context) {
	every(ctx, time.Second, func() {
		for fn, p := range *r.pools.Load() {
			// Not State(): that lists every instance, under the pool's lock.
			if n, streams := p.InFlight(); n > 0 {
				r.metrics.InFlight(fn, float64(streams)/float64(n))
			}
		}
	})
}

func (r *Router) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if r.shuttingDown.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		if why := r.regionFailing(); why != "" {
			// Health checks move traffic to a region whose Lambda takes it.
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		if !r.routesRead.Load() && time.Since(r.started) < routesGrace {
			// A task that could not read its routes yet would answer 404
			// for every route kept there: not in service until it has,
			// within a bound, so that an SSM outage cannot stop deploys.
			http.Error(w, "routes parameter not read yet", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if r.cfg.Pprof {
		// Profiles on the admin port only, which faces no client.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	mux.HandleFunc("GET /ring", func(w http.ResponseWriter, _ *http.Request) {
		// The replicas this one sees, and which of them own each function.
		type ringState struct {
			Self   string              `json:"self,omitempty"`
			Live   []string            `json:"live"`
			Owners map[string][]string `json:"owners"` // by function: the rendezvous order, owners first
		}
		st := ringState{Owners: map[string][]string{}}
		if r.ring != nil {
			st.Self, st.Live = r.ring.Self(), r.ring.Live()
			for fn := range *r.pools.Load() {
				st.Owners[fn] = ring.Rank(fn, st.Live)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /pool", func(w http.ResponseWriter, _ *http.Request) {
		pools := *r.pools.Load()
		names := slices.Sorted(maps.Keys(pools))
		out := make([]pool.State, 0, len(names))
		for _, n := range names {
			out = append(out, pools[n].State())
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	})
	return mux
}
