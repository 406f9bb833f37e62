package serve

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
)

// AppDialer is implemented by a Handler whose app listens on its own
// connection (the layer's bootstrap, which runs the app as a process): a
// protocol upgrade (a WebSocket) goes to the app over a connection of its
// own. A Handler without it is served one over an in-memory connection.
type AppDialer interface {
	DialApp(ctx context.Context) (net.Conn, error)
}

// upgradeTimeout bounds the app's answer to an upgrade request.
const upgradeTimeout = 10 * time.Second

// upgrade carries a protocol upgrade (tunnel.HeaderUpgrade) to the app: it
// sends the app the HTTP/1.1 request with its Upgrade, answers the stream
// with the app's answer, and, if the app switched protocols, copies bytes
// both ways until either side ends. The stream counts as one request in
// flight for as long as the connection lives.
func (s *streams) upgrade(w http.ResponseWriter, r *http.Request) {
	proto := r.Header.Get(tunnel.HeaderUpgrade)
	ctx, cancel := context.WithTimeout(r.Context(), upgradeTimeout)
	conn, err := s.dialApp(ctx)
	if err != nil {
		cancel()
		http.Error(w, "ferry: the app cannot be reached for the upgrade: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer conn.Close()

	out := r.Clone(ctx)
	out.URL.Scheme, out.URL.Host = "", ""
	out.RequestURI = ""
	for k := range out.Header {
		if tunnel.IsProtocolHeader(k) {
			out.Header.Del(k)
		}
	}
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", proto)
	out.Close = false
	out.Body, out.ContentLength = nil, 0
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	br := bufio.NewReader(conn)
	resp, err := writeAndRead(out, conn, br)
	cancel()
	conn.SetDeadline(time.Time{})
	if err != nil {
		http.Error(w, "ferry: the app did not answer the upgrade: "+err.Error(), http.StatusBadGateway)
		return
	}
	// The app speaks no tunnel protocol: a Ferry-Nack, Ferry-Load or
	// Ferry-Upgrade-Status of its own must not reach the router.
	stripProtocol(resp.Header)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// Refused (a 400, a 403, a 404): its answer, as any other.
		defer resp.Body.Close()
		maps.Copy(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return
	}
	for k, vs := range resp.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Upgrade", "Keep-Alive", "Transfer-Encoding", "Content-Length":
			// The connection's own; a length would cut the stream short.
		default:
			w.Header()[k] = vs
		}
	}
	w.Header().Set(tunnel.HeaderUpgradeStatus, "101")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}

	// Both ways until either ends: the router's side (the client) ends
	// the request body or resets the stream; the app closes its
	// connection.
	var once sync.Once
	stop := func() { once.Do(func() { conn.Close() }) }
	// A stream the router resets (the client gone, a close at the drain)
	// ends the app's connection, whatever the app does.
	defer context.AfterFunc(r.Context(), stop)()
	go func() {
		_, err := io.Copy(conn, r.Body)
		cw, ok := conn.(interface{ CloseWrite() error })
		if err != nil || !ok {
			stop()
			return
		}
		cw.CloseWrite() // the client is done sending; the app may still answer
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				break
			}
			if rc.Flush() != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	stop()
}

// writeAndRead writes req on conn and reads the response head from br.
func writeAndRead(req *http.Request, conn net.Conn, br *bufio.Reader) (*http.Response, error) {
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols &&
		!strings.EqualFold(resp.Header.Get("Upgrade"), req.Header.Get("Upgrade")) {
		return nil, fmt.Errorf("the app switched to %q, not %q", resp.Header.Get("Upgrade"), req.Header.Get("Upgrade"))
	}
	return resp, nil
}

// pipeDialer serves h over in-memory connections: how an in-process app
// takes an upgrade.
func pipeDialer(h http.Handler) func(context.Context) (net.Conn, error) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: upgradeTimeout}
	return func(context.Context) (net.Conn, error) {
		client, server := net.Pipe()
		go srv.Serve(&oneConn{conn: server}) // returns after the one; the connection is served on
		return client, nil
	}
}

// oneConn is a listener that accepts one connection.
type oneConn struct {
	mu   sync.Mutex
	conn net.Conn
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil, net.ErrClosed
	}
	c := l.conn
	l.conn = nil
	return c, nil
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
