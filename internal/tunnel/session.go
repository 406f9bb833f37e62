package tunnel

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Session is the bootstrap's end of an established tunnel: an HTTP/2 server
// connection whose client is the router.
type Session struct {
	// static after construction
	nc net.Conn
	h1 *http.Server // carries the graceful-shutdown hook into http2
	h2 *http2.Server

	drainOnce sync.Once
	served    chan struct{} // closed when ServeConn returns; never reopened
}

// NewSession prepares to serve at most maxStreams concurrent streams on nc,
// a connection returned by Dial. The router learns the limit from
// SETTINGS_MAX_CONCURRENT_STREAMS.
func NewSession(nc net.Conn, maxStreams int) *Session {
	h1 := &http.Server{}
	h2 := &http2.Server{
		MaxConcurrentStreams: uint32(maxStreams),
		// The router pings a tunnel it has not heard from in 5 s
		// (ServerConfig.PingInterval), so a live router is never silent
		// for long; one that vanished without closing the connection (its
		// host gone) shows up as silence, and the invocation ends within
		// about 17 s instead of being billed to its deadline.
		ReadIdleTimeout: 12 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	// ConfigureServer links h1.Shutdown to GOAWAY on every conn h2 serves.
	http2.ConfigureServer(h1, h2)
	return &Session{nc: nc, h1: h1, h2: h2, served: make(chan struct{})}
}

// Serve runs handler for each stream until the tunnel closes, then closes
// it. It returns when every stream's handler has returned. ctx becomes each
// request's base context.
func (s *Session) Serve(ctx context.Context, handler http.Handler) {
	defer close(s.served)
	defer s.nc.Close()
	s.h2.ServeConn(s.nc, &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: s.h1,
		Handler:    handler,
	})
}

// Drain sends GOAWAY: the router starts no new streams, streams it already
// opened run to completion, and the router closes the tunnel once they are
// done, which ends Serve. If ctx ends first, the tunnel is closed and the
// remaining streams fail. Drain returns when Serve has returned.
func (s *Session) Drain(ctx context.Context) {
	s.drainOnce.Do(func() { go s.h1.Shutdown(ctx) })
	select {
	case <-s.served:
	case <-ctx.Done():
		s.nc.Close()
		<-s.served
	}
}

// Done is closed when Serve has returned.
func (s *Session) Done() <-chan struct{} { return s.served }
