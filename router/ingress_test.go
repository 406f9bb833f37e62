package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func TestStreamingThroughRouter(t *testing.T) {
	s := startStack(t, stackOpts{})
	resp, err := client.Get(s.ingress + "/stream?chunks=3&interval_ms=400")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	noFerryHeaders(t, resp.Header)
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	gotFirst := time.Now().UnixMilli()
	if err != nil || !strings.HasPrefix(first, "chunk 0") {
		t.Fatalf("first chunk %q, %v", first, err)
	}
	rest, _ := io.ReadAll(br)
	var lastAt int64
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	if len(lines) != 2 {
		t.Fatalf("rest %q", rest)
	}
	fmt.Sscanf(lines[1], "chunk 2 at %d", &lastAt)
	if lastAt <= gotFirst {
		t.Errorf("first chunk reached the client at %d, after the app wrote its last at %d", gotFirst, lastAt)
	}
}

func TestLimits(t *testing.T) {
	s := startStack(t, stackOpts{routerEnv: map[string]string{
		"FERRY_ROUTER_MAX_HEADER_BYTES": "4096", "FERRY_ROUTER_MAX_BODY_BYTES": "100000", "FERRY_ROUTER_ROUTES": "app=/work,app=/echo,app=/healthz",
	}})
	stop := make(chan struct{})
	results, wait := s.load(4, "/work?wait_ms=20", stop) // other traffic, which must not suffer
	type tc struct {
		req        func() reply
		wantStatus int
		wantBody   string
	}
	big := bytes.Repeat([]byte("x"), 200_000)
	cases := map[string]tc{
		"oversized headers": {func() reply {
			return s.do("GET", "/echo", nil, http.Header{"X-Big": {strings.Repeat("h", 8000)}})
		}, 431, "Request Header Fields Too Large"},
		"oversized body with length": {func() reply {
			return s.do("POST", "/echo", bytes.NewReader(big), nil)
		}, 413, "exceeds the limit of 100000"},
		"oversized chunked body": {func() reply {
			return s.do("POST", "/echo", io.MultiReader(bytes.NewReader(big)), nil) // no length: chunked
		}, 413, "exceeds the limit of 100000"},
		"unknown route": {func() reply { return s.get("/nowhere") }, 404, `no route for host "127.0.0.1" and path "/nowhere"`},
		// Routes see the path the app will resolve: a dot segment, plain
		// or with an encoded slash, cannot take a request past its route.
		"dot segments out of a route":         {func() reply { return s.get("/echo/../nowhere") }, 404, `path "/nowhere"`},
		"encoded slash out of a route":        {func() reply { return s.get("/echo/..%2Fnowhere") }, 404, `path "/nowhere"`},
		"dot segments reach the app resolved": {func() reply { return s.get("/work/../echo") }, 200, `"path":"/echo"`},
		"body within limits": {func() reply {
			return s.do("POST", "/echo", bytes.NewReader(big[:90_000]), nil)
		}, 200, `"body_bytes":90000`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := c.req()
			if r.status != c.wantStatus || !strings.Contains(r.body, c.wantBody) {
				t.Errorf("got %d %.200q, want %d containing %q", r.status, r.body, c.wantStatus, c.wantBody)
			}
		})
	}
	close(stop)
	wait()
	for r := range results {
		if r.status != 200 {
			t.Errorf("concurrent good request got %d %q %v", r.status, r.body, r.err)
		}
	}
}

func TestProxyBehaviour(t *testing.T) {
	s := startStack(t, stackOpts{})

	t.Run("h2c on the ingress port, with X-Forwarded headers", func(t *testing.T) {
		h2c := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}}
		req, _ := http.NewRequest("GET", s.ingress+"/echo", nil)
		req.Host = "app.example.com"
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var echo struct{ Headers map[string][]string }
		json.NewDecoder(resp.Body).Decode(&echo)
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("got %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
		}
		want := map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "app.example.com"}
		for k, v := range want {
			if got := echo.Headers[k]; len(got) != 1 || got[0] != v {
				t.Errorf("app saw %s = %v, want %q", k, got, v)
			}
		}
	})

	t.Run("client Ferry headers do not reach the app", func(t *testing.T) {
		r := s.do("GET", "/echo", nil, http.Header{"Ferry-Nack": {"forged"}})
		if r.status != 200 || strings.Contains(r.body, "Ferry-Nack") {
			t.Errorf("got %d %s", r.status, r.body)
		}
	})

	t.Run("trailers pass through", func(t *testing.T) {
		resp, err := client.Get(s.ingress + "/echo?trailer=t1")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Echo-Trailer"); got != "t1" {
			t.Errorf("trailer = %q, want t1", got)
		}
	})

	t.Run("client disconnect cancels the stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", s.ingress+"/work?wait_ms=10000", nil)
		if _, err := client.Do(req); err == nil {
			t.Fatal("request outlived its context")
		}
		// The slot frees long before the app's 10 s wait would end.
		if !s.awaitNoStreams(3 * time.Second) {
			t.Fatalf("stream still in flight 3 s after the client left: %+v", s.pool())
		}
	})
}

// TestMalformedFramingIsAClientError: request smuggling's shape
// (Content-Length with Transfer-Encoding) is refused with 400 and the
// connection closed, so the request hidden in its body never reaches the
// app (it once did, on the kept-alive connection); a malformed chunked body
// is a 400, not a 502 and a warning.
func TestMalformedFramingIsAClientError(t *testing.T) {
	s := startStack(t, stackOpts{})
	for name, tc := range map[string]struct {
		raw  string
		want string
	}{
		"Content-Length with Transfer-Encoding": {
			raw: "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 55\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"0\r\n\r\nGET /echo?smuggled=1 HTTP/1.1\r\nHost: app\r\n\r\n",
			want: "Content-Length together with Transfer-Encoding",
		},
		"chunk size past 64 bits": {
			raw:  "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
			want: "malformed or cut short",
		},
		"chunk size not hex": {
			raw:  "POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
			want: "malformed or cut short",
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.raw)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(b), tc.want) {
				t.Errorf("got %d %q, want 400 saying %q", resp.StatusCode, b, tc.want)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the 400 the connection carried %q (%v), want it closed", rest, err)
			}
		})
	}
}

// Every request the router answered is counted, also one whose client
// hung up mid-body, which aborts the proxy's handler. (Such requests once
// went uncounted: a client that closes its connection as soon as it has
// the bytes a Content-Length promised, a hair before the instance's stream
// ends, made `ferry metrics` count fewer requests than clients saw served.)
func TestClientLeavingMidBodyIsCounted(t *testing.T) {
	s := startStack(t, stackOpts{})
	c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /stream?chunks=3&interval_ms=2000 HTTP/1.1\r\nHost: app\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.StatusCode != 200 || !strings.HasPrefix(first, "chunk 0") {
		t.Fatalf("got %d %q, %v", resp.StatusCode, first, err)
	}
	c.Close()
	if got := s.awaitEMF("Requests"); got != 1 {
		t.Errorf("router counted %v requests, want 1", got)
	}
	if got := s.emfSum("Errors5xx"); got != 0 {
		t.Errorf("router counted %v 5xx for a client that left", got)
	}
	if strings.Contains(s.routerLog.String(), "cut short") {
		t.Errorf("a client that left was taken for a broken instance:\n%s", s.routerLog.String())
	}
}

// Only ferry may refuse a request: an app that answers 503 with the nack
// header after doing the work is answered as it is, never run again on
// another instance (a POST once ran five times this way).
func TestAppCannotForgeANack(t *testing.T) {
	s := startStack(t, stackOpts{})
	r := s.do("POST", "/echo?status=503&header=Ferry-Nack:cpu&header=Ferry-Load:inflight%3D0", strings.NewReader("once"), nil)
	if r.status != 503 || !strings.Contains(r.body, `"body":"once"`) {
		t.Errorf("got %d %q; want the app's own 503 with its echo", r.status, r.body)
	}
	noFerryHeaders(t, r.header)
	if n := s.awaitEMF("Nacks"); n != 0 {
		t.Errorf("router counted %v nacks: it took the app's header for ferry's", n)
	}
	if got := s.emfSum("Requests"); got != 1 {
		t.Errorf("router counted %v requests, want 1", got)
	}
}

// Behind a load balancer the app sees the client's address and scheme as
// the balancer saw them; from anyone else such headers are replaced, so a
// client cannot claim another address.
func TestForwardedHeadersFromTrustedProxiesOnly(t *testing.T) {
	cases := []struct {
		name, trusted     string
		wantFor, wantProt string
	}{
		{"untrusted client", "", "127.0.0.1", "http"},
		{"trusted balancer", "127.0.0.0/8", "203.0.113.9, 127.0.0.1", "https"},
		{"balancer elsewhere", "10.0.0.0/16", "127.0.0.1", "http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.trusted != "" {
				env["FERRY_ROUTER_TRUSTED_PROXIES"] = tc.trusted
			}
			s := startStack(t, stackOpts{routerEnv: env})
			r := s.do("GET", "/echo", nil, http.Header{"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"}})
			var echo struct{ Headers map[string][]string }
			if err := json.Unmarshal([]byte(r.body), &echo); err != nil || r.status != 200 {
				t.Fatalf("got %d %q", r.status, r.body)
			}
			if got := strings.Join(echo.Headers["X-Forwarded-For"], ","); got != tc.wantFor {
				t.Errorf("app saw X-Forwarded-For %q, want %q", got, tc.wantFor)
			}
			if got := strings.Join(echo.Headers["X-Forwarded-Proto"], ","); got != tc.wantProt {
				t.Errorf("app saw X-Forwarded-Proto %q, want %q", got, tc.wantProt)
			}
		})
	}
}

// A client that trickles its body holds an instance slot no longer than the
// body timeout and its pace allow: then it gets 408, the slot frees, and
// nothing counts as the instance's failure (400 such clients once held
// their slots and goroutines for as long as they trickled).
func TestTrickledBodyFreesItsSlot(t *testing.T) {
	s := startStack(t, stackOpts{routerEnv: map[string]string{"FERRY_ROUTER_BODY_TIMEOUT": "1s"}})
	c, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Past the router's 64 KiB replay buffer, so the body streams to an
	// instance while it trickles.
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 200000\r\n\r\n")
	c.Write(bytes.Repeat([]byte("x"), 70_000))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	held := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !held; time.Sleep(50 * time.Millisecond) {
		for _, in := range s.pool().Instances {
			held = held || in.InFlight > 0
		}
	}
	if !held {
		t.Fatal("the trickled request never reached an instance")
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a trickled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("got %d %q after %v, want 408", resp.StatusCode, b, time.Since(start))
	}
	if !s.awaitNoStreams(3 * time.Second) {
		t.Fatalf("slot still held after the 408: %+v", s.pool())
	}
	if n := s.awaitEMF("Requests"); n != 1 || s.emfSum("Errors5xx") != 0 {
		t.Errorf("metrics: %v requests, %v 5xx; want 1 and 0", n, s.emfSum("Errors5xx"))
	}
	if strings.Contains(s.routerLog.String(), "instance failed mid-request") {
		t.Errorf("the client's slowness was taken for the instance's failure:\n%s", tail(s.routerLog.String(), 2000))
	}
	// A body sent at once, then an answer that takes longer than the body
	// timeout: the pace ends with the body, not the request.
	if r := s.do("GET", "/work?wait_ms=2500", strings.NewReader("prompt"), nil); r.status != 200 {
		t.Errorf("a prompt body with a 2.5 s answer at a 1 s body timeout: %d %q %v", r.status, r.body, r.err)
	}
}

// TestUpgradesRefused: a WebSocket handshake (or CONNECT, or another
// protocol upgrade) cannot cross the tunnel yet. It is answered 501 with
// a body that says so, before any instance is taken or launched, so a
// client reconnecting in a loop runs up no invocations; an offer of h2c
// is ignored and the request served as HTTP/1.1.
func TestUpgradesRefused(t *testing.T) {
	s := startStack(t, stackOpts{})
	before := s.pool().Stats.Launches
	refused := map[string]struct {
		method string
		hdr    http.Header
		status int
		want   string
	}{
		"another protocol": {"GET", http.Header{"Connection": {"upgrade"}, "Upgrade": {"h2c, IRC/6.9"}}, http.StatusNotImplemented,
			`an upgrade to "IRC/6.9" is not supported yet`},
		"websocket without a key": {"GET", http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"WebSocket"}, "Sec-Websocket-Version": {"13"}},
			http.StatusBadRequest, "needs Sec-WebSocket-Key"},
		"websocket on a second line, without a key": {"GET", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c", "websocket"}},
			http.StatusBadRequest, "needs Sec-WebSocket-Key"},
		"websocket of another version": {"GET", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"8"}}, http.StatusUpgradeRequired, "version 13 only"},
		"websocket by POST": {"POST", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}, http.StatusBadRequest, "HTTP/1.1 GET"},
	}
	for name, c := range refused {
		t.Run(name, func(t *testing.T) {
			r := s.do(c.method, "/echo", nil, c.hdr)
			if r.status != c.status || !strings.Contains(r.body, c.want) {
				t.Errorf("got %d %q, want %d saying %q", r.status, r.body, c.status, c.want)
			}
		})
	}
	t.Run("CONNECT", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.ingress, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotImplemented || !strings.Contains(string(b), "CONNECT is not supported yet") {
			t.Errorf("CONNECT got %d %q, want 501", resp.StatusCode, b)
		}
	})
	if after := s.pool().Stats.Launches; after != before {
		t.Errorf("refused upgrades launched %d invocations", after-before)
	}
	// An h2c offer is only an offer: the request is served.
	r := s.do("GET", "/echo", nil, http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMAAABkAARAAAAAAAIAAAAA"}})
	if r.status != http.StatusOK {
		t.Errorf("a request offering h2c got %d %q, want it served", r.status, r.body)
	}
}
