package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/net/http2"

	"github.com/ferryrun/ferry/internal/loglimit"
)

// ServerConfig configures the router's end of the tunnel.
type ServerConfig struct {
	// TLS is the listener's TLS configuration; see ServerTLSConfig. Required.
	TLS *tls.Config
	// Authenticate decides whether to accept a hello, typically by redeeming
	// its token. Its error is the reject reason sent back and logged; it
	// must not contain the token. Required.
	Authenticate func(ctx context.Context, h Hello) (Claims, error)
	// OnConn receives each tunnel once it is fully established: TLS done,
	// hello accepted, and the instance's HTTP/2 SETTINGS received. Required.
	OnConn func(*Conn)
	// HandshakeTimeout bounds TLS, hello and SETTINGS together. If zero, 5s.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds handshakes in progress; connections past it are
	// closed at once. If zero, 512.
	MaxHandshakes int
	// PingInterval is how long a tunnel may be silent before the router
	// pings it; a ping unanswered for as long again closes it, failing its
	// streams, so a hung instance (a stopped sandbox) stops taking
	// requests within two intervals. The bootstrap's HTTP/2 server answers
	// pings whatever its app is doing. If zero, 5s.
	PingInterval time.Duration
	// Logger receives one line per rejected handshake. If nil, slog.Default().
	Logger *slog.Logger
}

// Server accepts tunnels. It does not listen on its own: Serve takes the
// listener.
type Server struct {
	cfg  ServerConfig
	t2   *http2.Transport
	pool *connPool
	sem  chan struct{}

	acceptErrors atomic.Int64
	silent       atomic.Int64 // connections accepted, not yet spoken
	rejections   loglimit.Limiter
	acceptLog    loglimit.Limiter
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.TLS == nil || cfg.Authenticate == nil || cfg.OnConn == nil {
		return nil, errors.New("tunnel: ServerConfig needs TLS, Authenticate and OnConn")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 512
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pool := &connPool{}
	t2 := &http2.Transport{
		ConnPool:           pool,
		ReadIdleTimeout:    cfg.PingInterval,
		PingTimeout:        cfg.PingInterval,
		DisableCompression: true, // the app's encoding passes through untouched
		AllowHTTP:          true,
	}
	return &Server{cfg: cfg, t2: t2, pool: pool, sem: make(chan struct{}, cfg.MaxHandshakes)}, nil
}

// AcceptErrors counts failed accepts on the tunnel listener since Serve
// began (each retried).
func (s *Server) AcceptErrors() int64 { return s.acceptErrors.Load() }

// Serve accepts tunnels on ln until ctx ends or ln fails, and closes ln. It
// returns nil after ctx ends. Established tunnels outlive Serve; their owner
// (OnConn's receiver) closes them.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	// Consecutive accept errors back off, 5 ms growing 1.5x (jittered) to 1 s.
	pause := backoff.NewExponentialBackOff(backoff.WithInitialInterval(5*time.Millisecond),
		backoff.WithMaxInterval(time.Second), backoff.WithMaxElapsedTime(0))
	failing := false
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accepting tunnel: %w", err)
			}
			// Out of descriptors, a connection reset before accept, any
			// other hiccup: the listener is still good. Exiting here let
			// anyone who could fill the descriptor table stop the router.
			d := pause.NextBackOff()
			failing = true
			s.acceptErrors.Add(1)
			s.acceptLog.Warn(s.cfg.Logger, "accepting tunnel failed; retrying", "err", err, "in", d, "errors", s.acceptErrors.Load())
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if failing {
			pause.Reset()
			failing = false
		}
		// A connection holds a handshake slot only once it speaks: a
		// flood of silent (half-open) connections once held every slot,
		// and every cold start behind them failed.
		if s.silent.Load() >= int64(silentPerSlot*cap(s.sem)) {
			s.rejections.Warn(s.cfg.Logger, "tunnel rejected", "reason", "too many connections waiting to speak", "remote", nc.RemoteAddr().String())
			nc.Close()
			continue
		}
		s.silent.Add(1)
		go func() {
			spoken, err := firstByte(nc, min(s.cfg.HandshakeTimeout, firstByteTimeout))
			s.silent.Add(-1)
			if err != nil {
				s.cfg.Logger.Debug("tunnel connection closed before it spoke", "remote", nc.RemoteAddr().String(), "err", err)
				nc.Close()
				return
			}
			select {
			case s.sem <- struct{}{}:
			default:
				s.rejections.Warn(s.cfg.Logger, "tunnel rejected", "reason", "too many handshakes in progress", "remote", nc.RemoteAddr().String())
				nc.Close()
				return
			}
			defer func() { <-s.sem }()
			c, err := s.handshake(ctx, spoken)
			if err != nil {
				nc.Close()
				return
			}
			s.cfg.OnConn(c)
		}()
	}
}

const (
	// firstByteTimeout bounds the wait for a new connection's first byte
	// (a bootstrap sends its TLS ClientHello as soon as it connects).
	firstByteTimeout = 2 * time.Second
	// silentPerSlot bounds connections waiting for their first byte, per
	// handshake slot.
	silentPerSlot = 8
)

// firstByte waits up to d for nc's first byte and returns nc with that
// byte put back in front.
func firstByte(nc net.Conn, d time.Duration) (net.Conn, error) {
	nc.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 1)
	if _, err := io.ReadFull(nc, b); err != nil {
		return nil, err
	}
	nc.SetReadDeadline(time.Time{})
	return &prefixedConn{Conn: nc, prefix: b}, nil
}

type prefixedConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// handshake runs TLS, the hello and the HTTP/2 preface on nc. Every failure
// is logged here with its reason, and nc is left for the caller to close.
func (s *Server) handshake(ctx context.Context, nc net.Conn) (*Conn, error) {
	accepted := time.Now()
	log := s.cfg.Logger.With("remote", nc.RemoteAddr().String())
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)

	tc := tls.Server(nc, s.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		s.rejections.Warn(log, "tunnel rejected", "reason", "tls handshake failed", "err", err)
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
		err := fmt.Errorf("negotiated protocol %q, want %q", p, ALPN)
		s.rejections.Warn(log, "tunnel rejected", "reason", err.Error())
		return nil, err
	}

	var h Hello
	if err := readMessage(tc, &h); err != nil {
		reason := "reading hello: " + err.Error()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			reason = "connection closed before hello"
		} else if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			reason = "hello not received within handshake timeout"
		}
		s.rejections.Warn(log, "tunnel rejected", "reason", reason)
		return nil, err
	}
	log = log.With("function", h.FunctionARN, "request_id", h.RequestID)
	reject := func(err error) (*Conn, error) {
		s.rejections.Warn(log, "tunnel rejected", "reason", err.Error())
		writeMessage(tc, Answer{Reason: err.Error()})
		return nil, err
	}
	if err := h.Validate(); err != nil {
		return reject(err)
	}
	if err := h.CheckDeadline(accepted); err != nil {
		return reject(err)
	}
	claims, err := s.cfg.Authenticate(ctx, h)
	if err != nil {
		return reject(err)
	}
	if err := writeMessage(tc, Answer{OK: true}); err != nil {
		log.Warn("tunnel failed", "reason", "writing answer", "err", err)
		return nil, err
	}

	c := &Conn{hello: h, claims: claims, remote: nc.RemoteAddr().String(), accepted: accepted, start: time.Now(), done: make(chan struct{})}
	c.nc = &watchedConn{Conn: tc, gone: c.markDone}
	cc, err := s.t2.NewClientConn(c.nc)
	if err != nil {
		log.Warn("tunnel failed", "reason", "starting http/2", "err", err)
		return nil, err
	}
	c.cc = cc
	s.pool.conns.Store(cc, c)
	go func() {
		<-c.done
		s.pool.conns.Delete(cc)
	}()
	// A ping's answer comes after the instance's SETTINGS, so once it returns
	// the stream limit is known and the tunnel is fully established.
	if err := cc.Ping(ctx); err != nil {
		log.Warn("tunnel failed", "reason", "no http/2 settings from instance", "err", err)
		c.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
