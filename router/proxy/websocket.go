package proxy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/router/pool"
)

// WebSockets travel through the tunnel as one stream each: the router
// takes the client's HTTP/1.1 Upgrade (or an HTTP/2 extended CONNECT, RFC
// 8441, which it turns into an HTTP/1.1 Upgrade for the app), opens a stream marked
// tunnel.HeaderUpgrade on an instance, and once the app has switched
// protocols copies bytes both ways. A socket holds one of the instance's
// slots for as long as it lives, and keeps the invocation billed. When the
// instance drains before its deadline, the router closes the socket with
// 1012 (service restart) at a frame boundary, so that the client
// reconnects to a fresh instance.

const (
	// DefaultWebSocketIdle closes a socket with no byte either way for
	// this long.
	DefaultWebSocketIdle = 5 * time.Minute
	// wsCheck is how often a socket looks at its instance and its idleness.
	wsCheck = 100 * time.Millisecond
	// wsCloseWait bounds the wait for a frame boundary to close at.
	wsCloseWait = 2 * time.Second
)

// WebSocket close codes the router sends (RFC 6455, 7.4.1).
const (
	closeGoingAway      = 1001
	closeServiceRestart = 1012
)

// isWebSocket reports whether r asks for a WebSocket (RFC 6455, 4.1).
func isWebSocket(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// isH2WebSocket reports whether r opens a WebSocket over HTTP/2 (RFC
// 8441: CONNECT with :protocol websocket). Go's server passes such a
// request on only when the process runs with GODEBUG=http2xconnect=1.
func isH2WebSocket(r *http.Request) bool {
	return r.Method == http.MethodConnect && r.ProtoMajor == 2 && strings.EqualFold(r.Header.Get(":protocol"), "websocket")
}

// serveWebSocket carries r, a WebSocket opening handshake, to an instance
// of route's function.
func (h *Handler) serveWebSocket(w http.ResponseWriter, r *http.Request, route *Route, p *pool.Pool) {
	start := time.Now()
	h2 := isH2WebSocket(r)
	switch {
	case !h2 && (r.Method != http.MethodGet || r.ProtoMajor != 1):
		http.Error(w, "ferry: a WebSocket opens with an HTTP/1.1 GET, or an HTTP/2 CONNECT (RFC 8441)", http.StatusBadRequest)
		return
	case !h2 && r.Header.Get("Sec-WebSocket-Key") == "":
		http.Error(w, "ferry: a WebSocket handshake needs Sec-WebSocket-Key", http.StatusBadRequest)
		return
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "ferry: WebSocket version 13 only", http.StatusUpgradeRequired)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok && !h2 {
		http.Error(w, "ferry: this connection cannot carry a WebSocket", http.StatusInternalServerError)
		return
	}

	// r's context lives until this returns, hijacked or not; it ends
	// sooner only if the client leaves before the 101, which then
	// launches nothing.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	resp, toApp, lease, err := h.openUpgrade(ctx, r, p)
	if err != nil {
		h.errorHandler(w, r, err)
		h.cfg.Metrics.Request(route.Function, http.StatusBadGateway, time.Since(start), 0, 0)
		return
	}
	defer lease.Release()
	defer resp.Body.Close()
	defer toApp.Close()
	upgraded := resp.Header.Get(tunnel.HeaderUpgradeStatus) == "101"
	stripFerryHeaders(resp)
	if !upgraded {
		// The app refused (a 400, a 403): its answer, as any other, but
		// for its hop-by-hop headers (a Connection: close would end the
		// client's whole HTTP/2 connection).
		copyEndToEnd(w.Header(), resp.Header, "")
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		h.cfg.Metrics.Request(route.Function, resp.StatusCode, time.Since(start), time.Since(start), 0)
		return
	}
	if h2 {
		// RFC 8441: a 200 opens the stream, whose DATA frames then carry
		// the socket's bytes both ways. The app's Sec-WebSocket-Accept
		// answers the key the router made up for it: not the client's.
		copyEndToEnd(w.Header(), resp.Header, "Sec-Websocket-Accept")
		w.WriteHeader(http.StatusOK)
		ctl := http.NewResponseController(w)
		if err := ctl.Flush(); err != nil {
			return
		}
		h.cfg.Metrics.Request(route.Function, http.StatusOK, time.Since(start), time.Since(start), 0)
		h.log.Debug("websocket open", "function", route.Function, "path", r.URL.Path, "http2", true, "instance", lease.Conn().Hello().RequestID)
		why := h.relay(h2Client{w, ctl}, r.Body, toApp, resp.Body, lease.Conn())
		h.log.Debug("websocket closed", "function", route.Function, "path", r.URL.Path, "why", why, "lasted", time.Since(start))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	for k, vs := range resp.Header {
		if httpguts.ValidHeaderFieldName(k) && !hopByHop(k) {
			for _, v := range vs {
				if httpguts.ValidHeaderFieldValue(v) {
					head += k + ": " + v + "\r\n"
				}
			}
		}
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		return
	}
	conn.SetWriteDeadline(time.Time{})
	h.cfg.Metrics.Request(route.Function, http.StatusSwitchingProtocols, time.Since(start), time.Since(start), 0)
	h.log.Debug("websocket open", "function", route.Function, "path", r.URL.Path, "instance", lease.Conn().Hello().RequestID)
	why := h.relay(conn, brw.Reader, toApp, resp.Body, lease.Conn())
	h.log.Debug("websocket closed", "function", route.Function, "path", r.URL.Path, "why", why, "lasted", time.Since(start))
}

// openUpgrade opens the tunnel stream for r on an instance, trying another
// after a nack. It returns the response and the writer of the bytes to
// the app (each attempt has a body of its own: a nacked stream's may still
// be read from, and would swallow the client's first bytes).
func (h *Handler) openUpgrade(ctx context.Context, r *http.Request, p *pool.Pool) (*http.Response, *io.PipeWriter, *pool.Lease, error) {
	qctx, cancel := context.WithTimeout(ctx, h.cfg.QueueTimeout)
	defer cancel()
	var avoid *pool.Lease
	for range h.cfg.MaxAttempts {
		lease, err := p.AcquireSocket(qctx, avoid)
		if avoid != nil {
			avoid.Release()
		}
		if err != nil {
			return nil, nil, nil, err
		}
		body, toApp := io.Pipe()
		out := &http.Request{Method: http.MethodGet, URL: r.URL, Header: http.Header{}, Host: r.Host, Body: body}
		out = out.WithContext(ctx)
		pr := &httputil.ProxyRequest{In: r, Out: out}
		h.rewrite(pr)
		for k := range out.Header {
			if hopByHop(k) {
				out.Header.Del(k)
			}
		}
		named := map[string]bool{"Forwarded": true} // set by rewrite's X-Forwarded-*, not the client
		for _, v := range r.Header["Connection"] {
			for t := range strings.SplitSeq(v, ",") {
				named[http.CanonicalHeaderKey(strings.TrimSpace(t))] = true // the client's hop only
			}
		}
		for k, vs := range r.Header {
			if !hopByHop(k) && !tunnel.IsProtocolHeader(k) && !named[http.CanonicalHeaderKey(k)] && out.Header[k] == nil &&
				!strings.HasPrefix(k, ":") { // RFC 8441's :protocol
				out.Header[k] = vs
			}
		}
		if isH2WebSocket(r) {
			// The app takes an HTTP/1.1 handshake, which needs a key; the
			// HTTP/2 client sends none (RFC 8441, 5).
			key := make([]byte, 16)
			rand.Read(key)
			out.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
		}
		out.Header.Set(tunnel.HeaderUpgrade, "websocket") // the bootstrap asks no CPU admission of a socket
		if lease.DropCarried() {
			out.Header.Set(tunnel.HeaderDropCarried, "1")
		}
		resp, err := lease.Conn().RoundTrip(out)
		switch {
		case err == nil:
			if _, nacked := tunnel.IsNack(resp); !nacked {
				return resp, toApp, lease, nil
			}
			resp.Body.Close()
		case !tunnel.Unprocessed(err):
			body.Close()
			lease.Release()
			return nil, nil, nil, &startedError{err: err}
		}
		body.Close() // the refused stream's body ends here
		avoid = lease
	}
	if avoid != nil {
		avoid.Release()
	}
	return nil, nil, nil, errNackedOut
}

// copyEndToEnd copies src's headers into dst but for the hop-by-hop ones
// and except (canonical; "" for none).
func copyEndToEnd(dst, src http.Header, except string) {
	for k, vs := range src {
		if !hopByHop(k) && http.CanonicalHeaderKey(k) != except {
			dst[k] = vs
		}
	}
}

// hopByHop reports whether header k belongs to one connection (RFC 9110,
// 7.6.1), and so is not passed on.
func hopByHop(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding":
		return true
	}
	return false
}

// relay copies the socket's bytes both ways until either side ends, the
// instance drains (then the client gets a close frame 1012 at a frame
// boundary), or nothing moves for the idle timeout (1001). It says why it
// ended.
func (h *Handler) relay(client clientConn, fromClient io.Reader, toApp *io.PipeWriter, fromApp io.Reader, inst pool.Conn) string {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	clientDone := make(chan struct{})
	go func() {
		_, err := io.Copy(toApp, activity{fromClient, &last})
		toApp.CloseWithError(err)
		close(clientDone)
	}()
	type chunk struct {
		b   []byte
		err error
	}
	chunks := make(chan chunk)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			buf := make([]byte, 32<<10)
			n, err := fromApp.Read(buf)
			select {
			case chunks <- chunk{buf[:n], err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	idle := h.cfg.WebSocketIdle
	var frames frameCursor
	var closing time.Time // when a close was due
	var clientEnded time.Time
	code, reason := 0, ""
	tick := time.NewTicker(wsCheck)
	defer tick.Stop()
	for {
		select {
		case <-clientDone:
			// The client is done sending, which a WebSocket is only after
			// its close (or gone). The app's answer, its own close, may
			// still be on its way: an HTTP/2 stream is only half closed.
			// A client that is gone fails the next write.
			clientDone, clientEnded = nil, time.Now()
		case c := <-chunks:
			if len(c.b) > 0 {
				client.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := client.Write(c.b); err != nil {
					return "client gone"
				}
				frames.advance(c.b)
				last.Store(time.Now().UnixNano())
			}
			if c.err != nil {
				return "app closed"
			}
		case now := <-tick.C:
			if !clientEnded.IsZero() && now.Sub(clientEnded) >= wsCloseWait {
				return "client gone"
			}
			switch {
			case code != 0:
			case inst.Draining():
				code, reason, closing = closeServiceRestart, "instance draining: reconnect", now
			case now.Sub(time.Unix(0, last.Load())) > idle:
				code, reason, closing = closeGoingAway, "idle", now
			}
			// A close falling mid-frame waits for the frame's end, but
			// not past the instance's deadline.
			if code != 0 && (now.Sub(closing) >= wsCloseWait || inst.Deadline().Sub(now) < 500*time.Millisecond) {
				return fmt.Sprintf("closed %d mid-frame", code)
			}
		}
		if code != 0 && frames.boundary() {
			client.SetWriteDeadline(time.Now().Add(time.Second))
			client.Write(closeFrame(code, reason))
			return fmt.Sprintf("closed %d (%s)", code, reason)
		}
	}
}

// clientConn is where relay writes to the client: its hijacked HTTP/1.1
// connection, or its HTTP/2 stream.
type clientConn interface {
	Write(p []byte) (int, error)
	SetWriteDeadline(t time.Time) error
}

// h2Client writes to an HTTP/2 stream's response, each write flushed.
type h2Client struct {
	w   http.ResponseWriter
	ctl *http.ResponseController
}

func (c h2Client) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err == nil {
		err = c.ctl.Flush()
	}
	// On HTTP/2 a write deadline resets the stream when it passes, written
	// to or not (unlike a connection's): it bounds this write only.
	c.ctl.SetWriteDeadline(time.Time{})
	return n, err
}

func (c h2Client) SetWriteDeadline(t time.Time) error { return c.ctl.SetWriteDeadline(t) }

// activity is a reader that stamps the time of each read that moved bytes.
type activity struct {
	r    io.Reader
	last *atomic.Int64
}

func (a activity) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// closeFrame is a server's close frame (unmasked) with code and reason.
func closeFrame(code int, reason string) []byte {
	reason = reason[:min(len(reason), 123)] // a control frame's payload is at most 125 bytes
	f := []byte{0x88, byte(2 + len(reason)), byte(code >> 8), byte(code)}
	return append(f, reason...)
}

// frameCursor follows the frames of one direction of a WebSocket, so that
// the router can tell when a frame has ended and a close frame may go in.
type frameCursor struct {
	hdr  [14]byte
	nhdr int    // bytes of the current frame's header seen
	left uint64 // payload bytes of the current frame still to come
}

// boundary reports whether the bytes so far end a frame.
func (c *frameCursor) boundary() bool { return c.nhdr == 0 && c.left == 0 }

// advance follows p.
func (c *frameCursor) advance(p []byte) {
	for len(p) > 0 {
		if c.left > 0 {
			n := min(uint64(len(p)), c.left)
			c.left -= n
			p = p[n:]
			continue
		}
		c.hdr[c.nhdr] = p[0]
		c.nhdr++
		p = p[1:]
		if c.nhdr < 2 {
			continue
		}
		need := 2
		switch c.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if c.hdr[1]&0x80 != 0 {
			need += 4 // the masking key
		}
		if c.nhdr < need {
			continue
		}
		switch l := c.hdr[1] & 0x7f; l {
		case 126:
			c.left = uint64(binary.BigEndian.Uint16(c.hdr[2:4]))
		case 127:
			c.left = binary.BigEndian.Uint64(c.hdr[2:10])
		default:
			c.left = uint64(l)
		}
		c.nhdr = 0
	}
}
