package framing

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// serve runs an http.Server over one watched in-memory connection, feeds
// it raw, and returns what the handler saw: for each request, its method,
// target and verdict, and the raw responses.
func serve(t *testing.T, raw string, readBody bool) (seen []string, responses string) {
	t.Helper()
	client, server := net.Pipe()
	ln := &oneConn{c: &Conn{Conn: server, w: watch{maxHead: 64 << 10}}, done: make(chan struct{})}
	got := make(chan string, 100)
	srv := &http.Server{
		ConnContext:                  ConnContext,
		DisableGeneralOptionsHandler: true,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v := Check(r.Context(), r.Method, r.RequestURI, r.ProtoMajor)
			got <- r.Method + " " + r.RequestURI + " " + string(v)
			if v != "" {
				w.Header().Set("Connection", "close")
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if readBody {
				io.Copy(io.Discard, r.Body)
			}
			io.WriteString(w, "ok")
		}),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	go func() { io.WriteString(client, raw) }()
	var out strings.Builder
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(&out, bufio.NewReader(client))
	client.Close()
	close(got)
	for s := range got {
		seen = append(seen, s)
	}
	return seen, out.String()
}

type oneConn struct {
	c    net.Conn
	done chan struct{}
	used bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if !l.used {
		l.used = true
		return l.c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConn) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

func TestSmugglingRefusedAndTheConnectionClosed(t *testing.T) {
	for name, tc := range map[string]struct {
		raw      string
		readBody bool
		want     []string
	}{
		"keep-alive requests pass": {
			raw: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
				"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
				"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n" +
				"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			readBody: true,
			want:     []string{"GET /a ", "POST /b ", "POST /c ", "GET /d "},
		},
		"bodies left unread pass": {
			raw: "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
				"POST /c HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
				"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			want: []string{"POST /b ", "POST /c ", "GET /d "},
		},
		"CL and TE: refused, and the request in its body never served": {
			raw: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
				"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
			readBody: true,
			want:     []string{"GET /a ", "POST /b " + string(Ambiguous)},
		},
		"TE before CL, any case": {
			raw:  "POST /b HTTP/1.1\r\nHost: x\r\ntransfer-ENCODING: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
			want: []string{"POST /b " + string(Ambiguous)},
		},
		"OPTIONS * cannot shift the count": {
			raw: "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" +
				"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
			want: []string{"OPTIONS * ", "POST /b " + string(Ambiguous)},
		},
		"chunk data with a request-like look is body": {
			raw: "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"1c\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n" +
				"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			readBody: true,
			want:     []string{"POST /b ", "GET /d "},
		},
	} {
		t.Run(name, func(t *testing.T) {
			seen, out := serve(t, tc.raw, tc.readBody)
			if strings.Join(seen, "|") != strings.Join(tc.want, "|") {
				t.Errorf("handler saw %q, want %q\nresponses:\n%s", seen, tc.want, out)
			}
			if strings.Contains(out, "smuggled") || strings.Count(out, "HTTP/1.1 ") != len(tc.want) {
				t.Errorf("responses:\n%s", out)
			}
		})
	}
}

func TestUnwatchedAndHTTP2RequestsPass(t *testing.T) {
	if v := Check(context.Background(), "GET", "/", 1); v != "" {
		t.Errorf("unwatched connection: %q", v)
	}
	c := &Conn{w: watch{maxHead: 1 << 10}}
	ctx := ConnContext(context.Background(), c)
	if v := Check(ctx, "GET", "/", 2); v != "" {
		t.Errorf("HTTP/2 request: %q", v)
	}
	if v := Check(ctx, "GET", "/", 1); v != Unseen {
		t.Errorf("HTTP/1 request whose head the watch never saw: %q, want %q", v, Unseen)
	}
}

// FuzzWatch: the watch never panics, holds no more than its limits, and
// sees the same requests however the bytes are split across reads.
func FuzzWatch(f *testing.F) {
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"), uint16(7))
	f.Add([]byte("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: t\r\n\r\nGET /d HTTP/1.1\r\n\r\n"), uint16(30))
	f.Add([]byte("POST /b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), uint16(1))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), uint16(3))
	f.Add([]byte("GET / HTTP/1.0\nTransfer-Encoding: chunked\nContent-Length: 2\n\nabGET /x HTTP/1.0\n\n"), uint16(9))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		whole := watch{maxHead: 1 << 10}
		whole.feed(data)
		parts := watch{maxHead: 1 << 10}
		for rest := data; len(rest) > 0; {
			n := min(int(split%64)+1, len(rest))
			parts.feed(rest[:n])
			rest = rest[n:]
		}
		held := 0
		for _, h := range whole.heads {
			held += len(h.key)
		}
		if len(whole.heads) > maxPending || held > maxPending*maxKey || len(whole.line) > max(maxLine, whole.maxHead) {
			t.Fatalf("watch holds %d heads and a %d-byte line", len(whole.heads), len(whole.line))
		}
		if !reflect.DeepEqual(whole.heads, parts.heads) || whole.st != parts.st {
			t.Fatalf("whole: %+v (state %d); in parts of %d: %+v (state %d)", whole.heads, whole.st, split%64+1, parts.heads, parts.st)
		}
	})
}

// TestHeldHeadsAreBounded: bytes net/http never parses as requests (a
// WebSocket's, after the upgrade hijacked the connection) cannot make the
// watch hold memory: a flood of heads with 10 KB targets keeps at most
// maxPending heads of maxKey bytes each.
func TestHeldHeadsAreBounded(t *testing.T) {
	w := watch{maxHead: 64 << 10}
	line := []byte("GET /" + strings.Repeat("x", 10<<10) + " HTTP/1.1\r\n\r\n")
	for range 1000 {
		w.feed(line)
	}
	var held int
	for _, h := range w.heads {
		held += len(h.key)
	}
	if len(w.heads) > maxPending || held > maxPending*maxKey {
		t.Errorf("the watch holds %d heads, %d bytes of them", len(w.heads), held)
	}
}
