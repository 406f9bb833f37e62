package main_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
)

// dialWS opens a WebSocket through the router.
func (s *stack) dialWS(t *testing.T, ctx context.Context, path string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.ingress, "http")+path, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dialing %s: %v (status %d)", path, err, status)
	}
	c.SetReadLimit(1 << 20)
	return c
}

// WebSockets travel through the tunnel to the app: echo, server push and
// the app's close code, 100 sockets at once on one instance, and a socket
// the instance's drain closes with 1012 so that the client reconnects.
func TestWebSockets(t *testing.T) {
	s := startStack(t, stackOpts{fnEnv: map[string]string{"FERRY_MAX_CONCURRENCY": "128"},
		routerEnv: map[string]string{"FERRY_ROUTER_MAX_CONCURRENCY": "128"}})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	t.Run("echo", func(t *testing.T) {
		c := s.dialWS(t, ctx, "/ws/echo")
		defer c.CloseNow()
		for _, m := range []struct {
			typ websocket.MessageType
			b   []byte
		}{{websocket.MessageText, []byte("hello")}, {websocket.MessageBinary, []byte{0, 1, 2, 255}}, {websocket.MessageText, []byte(strings.Repeat("x", 200_000))}} {
			if err := c.Write(ctx, m.typ, m.b); err != nil {
				t.Fatal(err)
			}
			typ, b, err := c.Read(ctx)
			if err != nil || typ != m.typ || string(b) != string(m.b) {
				t.Fatalf("echo of %d bytes: %v, %d bytes, %v", len(m.b), typ, len(b), err)
			}
		}
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Errorf("closing: %v", err)
		}
	})

	t.Run("server push and its close", func(t *testing.T) {
		c := s.dialWS(t, ctx, "/ws/push?n=5&interval_ms=20")
		defer c.CloseNow()
		for i := range 5 {
			_, b, err := c.Read(ctx)
			if err != nil || string(b) != fmt.Sprint("push ", i) {
				t.Fatalf("push %d: %q %v", i, b, err)
			}
		}
		_, _, err := c.Read(ctx)
		if st := websocket.CloseStatus(err); st != websocket.StatusNormalClosure {
			t.Errorf("after the pushes: %v (status %d), want the app's 1000", err, st)
		}
	})

	t.Run("a client that goes frees its slot", func(t *testing.T) {
		c := s.dialWS(t, ctx, "/ws/echo")
		if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		c.CloseNow() // no close handshake: the TCP connection just ends
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			inFlight := 0
			for _, in := range s.pool().Instances {
				inFlight += in.InFlight
			}
			if inFlight == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the socket of a client that went still holds a slot: %+v", s.pool())
			}
		}
	})

	t.Run("npm ws client", func(t *testing.T) {
		// A Node user's client: the ws package, installed from its lock
		// into a directory of the test's own.
		dir := t.TempDir()
		for _, f := range []string{"package.json", "package-lock.json", "client.js"} {
			b, err := os.ReadFile(filepath.Join("testdata", "wsclient", f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, f), b, 0o644)
		}
		run := func(timeout time.Duration, name string, args ...string) string {
			t.Helper()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		run(2*time.Minute, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		if out := run(30*time.Second, "node", "client.js", "ws"+strings.TrimPrefix(s.ingress, "http")); strings.TrimSpace(out) != "ok" {
			t.Errorf("the ws client said %q", out)
		}
	})

	t.Run("100 sockets on one instance", func(t *testing.T) {
		var conns []*websocket.Conn
		for range 100 {
			conns = append(conns, s.dialWS(t, ctx, "/ws/echo"))
		}
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Go(func() {
				msg := fmt.Sprint("socket ", i)
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Error(err)
					return
				}
				if _, b, err := c.Read(ctx); err != nil || string(b) != msg {
					t.Errorf("socket %d: %q %v", i, b, err)
				}
			})
		}
		wg.Wait()
		p := s.pool()
		open := 0
		for _, in := range p.Instances {
			open = max(open, in.InFlight)
		}
		if open < 100 {
			t.Errorf("the most sockets on one instance: %d, want all 100 (each holds a slot): %+v", open, p)
		}
		for _, c := range conns {
			c.Close(websocket.StatusNormalClosure, "")
		}
	})

	t.Run("drain closes with 1012, and the client reconnects", func(t *testing.T) {
		s := startStack(t, stackOpts{timeout: 4 * time.Second}) // drains a second before its deadline
		c := s.dialWS(t, ctx, "/ws/echo")
		defer c.CloseNow()
		start := time.Now()
		_, _, err := c.Read(ctx) // the app sends nothing: the next frame is the router's close
		if st := websocket.CloseStatus(err); st != websocket.StatusServiceRestart {
			t.Fatalf("after %v: %v (status %d), want 1012 at the instance's drain", time.Since(start), err, st)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("closed after %v, past the function's 4 s timeout", took)
		}
		again := s.dialWS(t, ctx, "/ws/echo")
		defer again.CloseNow()
		if err := again.Write(ctx, websocket.MessageText, []byte("again")); err != nil {
			t.Fatal(err)
		}
		if _, b, err := again.Read(ctx); err != nil || string(b) != "again" {
			t.Errorf("after reconnecting: %q %v", b, err)
		}
	})
}

// TestWebSocketOverHTTP2: an HTTP/2 client opens a WebSocket with an
// extended CONNECT (RFC 8441) straight to the router (h2c); the router
// carries it to the app as an HTTP/1.1 Upgrade, with a key of its own.
// Echo both ways, then the close handshake. (No WebSocket library speaks
// RFC 8441 as a client, so the frames are written here.)
func TestWebSocketOverHTTP2(t *testing.T) {
	s := startStack(t, stackOpts{routerEnv: map[string]string{"GODEBUG": "http2xconnect=1"}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	toServer, body := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, s.ingress+"/ws/echo", toServer)
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Sec-Websocket-Accept") != "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("extended CONNECT: %d %v %q; want 200 without the app's Sec-WebSocket-Accept", resp.StatusCode, resp.Header, b)
	}
	noFerryHeaders(t, resp.Header)
	for _, msg := range []string{"hello", strings.Repeat("x", 300)} {
		if _, err := body.Write(clientFrame(0x1, []byte(msg))); err != nil {
			t.Fatal(err)
		}
		op, got := readFrame(t, resp.Body)
		if op != 0x1 || string(got) != msg {
			t.Fatalf("echo of %d bytes: opcode %#x, %d bytes", len(msg), op, len(got))
		}
	}
	// The client's close, then the end of its half of the stream at once
	// (END_STREAM): the app's close must still come back.
	body.Write(clientFrame(0x8, []byte{0x03, 0xe8})) // close, 1000
	body.Close()
	if op, payload := readFrame(t, resp.Body); op != 0x8 || len(payload) < 2 || int(payload[0])<<8|int(payload[1]) != 1000 {
		t.Fatalf("after the client's close: opcode %#x %v, want the app's close 1000", op, payload)
	}
}

// clientFrame is a final, masked client frame (RFC 6455, 5.2).
func clientFrame(op byte, payload []byte) []byte {
	f := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	}
	mask := []byte{0x5a, 0x13, 0xc7, 0x21}
	f = append(f, mask...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// readFrame reads one unmasked server frame's opcode and payload.
func readFrame(t *testing.T, r io.Reader) (byte, []byte) {
	t.Helper()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	n := int(hdr[1] & 0x7f)
	switch n {
	case 126:
		ext := make([]byte, 2)
		io.ReadFull(r, ext)
		n = int(ext[0])<<8 | int(ext[1])
	case 127:
		t.Fatal("a frame over 64 KiB")
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatalf("reading a frame's %d bytes: %v", n, err)
	}
	return hdr[0] & 0x0f, payload
}
