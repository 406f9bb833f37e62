// Package framing watches the HTTP/1.1 framing of client connections, to
// refuse request smuggling that net/http lets through.
//
// A request carrying both Content-Length and Transfer-Encoding is the shape
// of request smuggling: a proxy in front that frames by one header and a
// server behind that frames by the other disagree on where the next request
// starts. RFC 9112 section 6.3 lets a server refuse such a request and
// requires it to close the connection after answering. net/http serves it
// by Transfer-Encoding, deletes Content-Length before the handler can see
// it, and keeps the connection open, so a pipelined request hidden in the
// body reaches the app. Watching the bytes as net/http reads them, this
// package tells the handler which requests carried both headers, so that it
// answers them 400 and closes.
//
// The watch mirrors net/http's framing: a request line, header lines to an
// empty line, then a body framed by chunked Transfer-Encoding (HTTP/1.1 and
// later), else Content-Length, else none. It fails closed: a request whose
// head it did not see, or saw as another request, is refused too.
package framing

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
)

// Limits on what the watch holds: a head longer than maxHead, a chunk line
// longer than maxLine (net/http's own chunk line limit is 4096) or more
// than maxPending heads read ahead of the handler end the watch, and the
// requests it then cannot vouch for are refused. net/http reads only its
// 4 KiB buffer ahead, so maxPending is reached only by bytes it never
// parses as requests (a hijacked connection's): each head keeps at most
// maxKey bytes of its request line, so that they cannot hold memory.
const (
	maxLine    = 4096
	maxPending = 256
	maxKey     = 128
)

// Listener returns ln with every accepted connection watched. maxHead is
// the longest request head to follow (the server's MaxHeaderBytes plus its
// read buffer is enough).
func Listener(ln net.Listener, maxHead int) net.Listener {
	return &listener{Listener: ln, maxHead: maxHead}
}

type listener struct {
	net.Listener
	maxHead int
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, w: watch{maxHead: l.maxHead}}, nil
}

// Conn is a watched connection.
type Conn struct {
	net.Conn
	mu sync.Mutex
	w  watch // guarded by mu
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.w.feed(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

type ctxKey struct{}

// ConnContext is for http.Server.ConnContext: it makes a watched
// connection known to Refuse.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if wc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, ctxKey{}, wc)
	}
	return ctx
}

// Verdict says why a request must be refused, or "" if it may be served.
type Verdict string

const (
	// Ambiguous: the request carried both Content-Length and
	// Transfer-Encoding.
	Ambiguous Verdict = "Content-Length together with Transfer-Encoding"
	// Unseen: the watch did not see this request's head where net/http
	// read it; framing is uncertain.
	Unseen Verdict = "request framing could not be followed"
)

// Check is called once for each HTTP/1 request a handler receives on ctx's
// connection, in order. Requests on connections that are not watched, and
// HTTP/2 requests, are not checked.
func Check(ctx context.Context, method, requestURI string, protoMajor int) Verdict {
	c, _ := ctx.Value(ctxKey{}).(*Conn)
	if c == nil || protoMajor != 1 {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &c.w
	if len(w.heads) == 0 {
		return Unseen
	}
	h := w.heads[0]
	w.heads = w.heads[1:]
	key, keyLen := requestKey(method, requestURI)
	switch {
	case h.key != key || h.keyLen != keyLen:
		return Unseen
	case h.ambiguous:
		return Ambiguous
	}
	return ""
}

// head is what the watch saw of one request's head: the start of its
// method and target, their length, and whether it was ambiguous.
type head struct {
	key       string
	keyLen    int
	ambiguous bool
}

// requestKey is the start of "method target", at most maxKey bytes, and
// its whole length.
func requestKey(method, target string) (string, int) {
	k := method + " " + target
	return k[:min(len(k), maxKey)], len(k)
}

type state int

const (
	inHead      state = iota // request line and header lines
	inBody                   // left bytes of a Content-Length body
	inChunkLine              // a chunk size line
	inChunk                  // left bytes of a chunk's data
	inChunkEnd               // the line ending a chunk's data
	inTrailer                // trailer lines after the last chunk
	off                      // not HTTP/1 (h2c, a hijacked connection) or lost
)

// watch follows one connection's requests. It only reads: what it
// concludes reaches the handler through Check.
type watch struct {
	maxHead int
	st      state
	line    []byte // the line so far
	headLen int    // bytes of the current head so far
	left    int64  // inBody, inChunk: bytes still to skip
	lines   int    // lines of the current head

	// the current head
	method, target, proto string
	cl, te                []string

	heads []head // seen, not yet checked
}

func (w *watch) feed(p []byte) {
	for len(p) > 0 && w.st != off {
		switch w.st {
		case inBody, inChunk:
			n := int64(len(p))
			if n > w.left {
				n = w.left
			}
			w.left -= n
			p = p[n:]
			if w.left == 0 {
				if w.st == inBody {
					w.st = inHead
				} else {
					w.st = inChunkEnd
				}
			}
		default:
			i := bytes.IndexByte(p, '\n')
			chunk := p
			if i >= 0 {
				chunk = p[:i]
			}
			limit := maxLine
			if w.st == inHead || w.st == inTrailer {
				limit = w.maxHead - w.headLen
			}
			if len(w.line)+len(chunk) > limit {
				w.st = off // net/http refuses it too, and closes
				return
			}
			w.line = append(w.line, chunk...)
			if i < 0 {
				return
			}
			p = p[i+1:]
			w.headLen += len(w.line) + 1
			line := strings.TrimSuffix(string(w.line), "\r")
			w.line = w.line[:0]
			w.onLine(line)
		}
	}
}

func (w *watch) onLine(line string) {
	switch w.st {
	case inHead:
		w.onHeadLine(line)
	case inChunkLine:
		if i := strings.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseUint(strings.TrimSpace(line), 16, 63)
		switch {
		case err != nil:
			w.st = off // net/http fails the body: the connection closes
		case n == 0:
			w.st, w.headLen = inTrailer, 0
		default:
			w.st, w.left = inChunk, int64(n)
		}
	case inChunkEnd:
		if line != "" {
			w.st = off
			return
		}
		w.st = inChunkLine
	case inTrailer:
		if line == "" {
			w.st, w.headLen = inHead, 0
		}
	}
}

func (w *watch) onHeadLine(line string) {
	if w.lines == 0 {
		if line == "" {
			w.headLen = 0
			return // net/http skips no empty line; it will refuse, or the watch is harmless
		}
		if strings.HasPrefix(line, "PRI * HTTP/2") {
			w.st = off // h2c with prior knowledge: HTTP/2 frames from here
			return
		}
		// Split as net/http splits it.
		method, rest, ok1 := strings.Cut(line, " ")
		target, proto, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 {
			w.st = off // net/http refuses a malformed request line, and closes
			return
		}
		w.method, w.target, w.proto = method, target, proto
		w.lines++
		return
	}
	if line != "" {
		w.lines++
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return // net/http refuses it, and closes
		}
		switch {
		case strings.EqualFold(strings.TrimSpace(name), "Content-Length"):
			w.cl = append(w.cl, strings.TrimSpace(value))
		case strings.EqualFold(strings.TrimSpace(name), "Transfer-Encoding"):
			w.te = append(w.te, strings.TrimSpace(value))
		}
		return
	}
	// The head is complete: record it, then frame its body as net/http does.
	if len(w.heads) == maxPending {
		w.st = off
		return
	}
	key, keyLen := requestKey(w.method, w.target)
	w.heads = append(w.heads, head{key: key, keyLen: keyLen, ambiguous: len(w.cl) > 0 && len(w.te) > 0})
	http11 := w.proto != "HTTP/1.0" && w.proto != "HTTP/0.9"
	cl, te := w.cl, w.te
	w.lines, w.headLen, w.cl, w.te = 0, 0, nil, nil
	switch {
	case http11 && len(te) > 0:
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			w.st = off // net/http answers 501 and closes
			return
		}
		w.st = inChunkLine
	case len(cl) > 0:
		n, err := strconv.ParseUint(cl[0], 10, 63)
		if err != nil {
			w.st = off // net/http answers 400 and closes
			return
		}
		if n > 0 {
			w.st, w.left = inBody, int64(n)
		}
	}
}
