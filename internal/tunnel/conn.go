package tunnel

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Conn is the router's end of an established tunnel: an HTTP/2 client
// connection to one live Lambda invocation.
type Conn struct {
	// static after construction
	hello  Hello
	claims Claims
	remote string
	cc     *http2.ClientConn
	nc     net.Conn
	// accepted is when the TCP connection arrived, start when the
	// handshake (TLS, hello, answer) was done.
	accepted, start time.Time

	done      chan struct{} // closed when the connection is gone; never reopened
	closeOnce sync.Once
	draining  atomic.Bool
	load      atomic.Pointer[Load] // last hint seen on a response or the load stream
}

// Hello returns the hello the instance sent.
func (c *Conn) Hello() Hello { return c.hello }

// Handshake returns when the tunnel's TCP connection was accepted and how
// long TLS, the hello and the answer took after that.
func (c *Conn) Handshake() (accepted time.Time, took time.Duration) {
	return c.accepted, c.start.Sub(c.accepted)
}

// Claims returns what the instance's token proved.
func (c *Conn) Claims() Claims { return c.claims }

// RemoteAddr returns the instance's address as seen by the router.
func (c *Conn) RemoteAddr() string { return c.remote }

// Deadline returns the invocation's deadline from the hello.
func (c *Conn) Deadline() time.Time { return time.UnixMilli(c.hello.DeadlineUnixMs) }

// Limit returns the instance's stream limit: its SETTINGS_MAX_CONCURRENT_STREAMS,
// less the load stream's, which requests never use.
func (c *Conn) Limit() int {
	n := int(c.cc.State().MaxConcurrentStreams)
	if c.hello.LoadStream {
		n--
	}
	if n > 0 {
		return n
	}
	return c.hello.MaxConcurrency
}

// InFlight returns the streams open on the tunnel, as HTTP/2 counts them
// (a stream counts until fully closed, a little after its response ends).
// The router's pool keeps its own count for scheduling.
func (c *Conn) InFlight() int {
	return c.cc.State().StreamsActive
}

// CanTakeStream reports whether a RoundTrip would start a stream now.
func (c *Conn) CanTakeStream() bool {
	return !c.draining.Load() && c.cc.CanTakeNewRequest()
}

// Draining reports whether the instance sent GOAWAY, or the connection is
// closing for any other reason.
func (c *Conn) Draining() bool {
	return c.draining.Load() || c.cc.State().Closing
}

// Done is closed when the tunnel is gone.
func (c *Conn) Done() <-chan struct{} { return c.done }

// WatchLoad reads the instance's load stream (if its hello offers one)
// until the tunnel ends, keeping Load current and calling changed after
// each update. It blocks: run it in its own goroutine.
func (c *Conn) WatchLoad(changed func()) {
	if !c.hello.LoadStream {
		return
	}
	req, err := http.NewRequest(http.MethodGet, "http://instance/", nil)
	if err != nil {
		return
	}
	req.Header.Set(HeaderLoadStream, "1")
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderLoadStream) == "" {
		return
	}
	sc := bufio.NewScanner(resp.Body) // lines of at most 64 KiB
	for sc.Scan() {
		if l, err := ParseLoad(sc.Text()); err == nil {
			l.At = time.Now()
			c.load.Store(&l)
			changed()
		}
	}
}

// Load returns the last load hint the instance sent, and false before any.
func (c *Conn) Load() (Load, bool) {
	if l := c.load.Load(); l != nil {
		return *l, true
	}
	return Load{}, false
}

// RoundTrip sends req over the tunnel and returns the response with its
// body streaming. It records the response's load hint. See Unprocessed and
// IsNack for classifying its result.
func (c *Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-c.done:
		return nil, errConnClosed
	default:
	}
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if v := resp.Header.Get(HeaderLoad); v != "" {
		if l, err := ParseLoad(v); err == nil {
			l.At = time.Now()
			c.load.Store(&l)
		}
	}
	return resp, nil
}

// Shutdown stops new streams, waits for the running ones, then closes the
// tunnel. The bootstrap sees the close and ends its invocation. If ctx ends
// first, the tunnel is closed at once.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.draining.Store(true)
	err := c.cc.Shutdown(ctx)
	if err != nil {
		c.Close()
	}
	return err
}

// Close closes the tunnel at once; streams in flight fail.
func (c *Conn) Close() error {
	c.draining.Store(true)
	err := c.cc.Close()
	c.nc.Close()
	c.markDone()
	return err
}

func (c *Conn) markDone() {
	c.closeOnce.Do(func() { close(c.done) })
}

// onGoAway runs when the instance sends GOAWAY or the connection dies. The
// instance is draining: once its running streams finish, close the tunnel
// ourselves instead of leaving the instance to wait out its GOAWAY timer on
// billed time.
func (c *Conn) onGoAway() {
	if !c.draining.CompareAndSwap(false, true) {
		return
	}
	go func() {
		ctx, cancel := context.WithDeadline(context.Background(), c.Deadline())
		defer cancel()
		c.Shutdown(ctx)
		c.markDone()
	}()
}

// watchedConn closes its Conn's done channel when the peer goes away.
type watchedConn struct {
	net.Conn
	gone func()
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.gone()
	}
	return n, err
}

func (w *watchedConn) Close() error {
	err := w.Conn.Close()
	w.gone()
	return err
}

// connPool is the http2.Transport's ClientConnPool. The tunnel never lets
// the Transport pick connections; it implements the pool only to hear
// MarkDead, which x/net/http2 calls when a GOAWAY arrives.
type connPool struct {
	conns sync.Map // *http2.ClientConn -> *Conn
}

var errNoPool = errors.New("tunnel: requests go through Conn.RoundTrip")

func (p *connPool) GetClientConn(*http.Request, string) (*http2.ClientConn, error) {
	return nil, errNoPool
}

func (p *connPool) MarkDead(cc *http2.ClientConn) {
	if c, ok := p.conns.Load(cc); ok {
		c.(*Conn).onGoAway()
	}
}
