package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/testbin"
)

const testFunction = "arn:aws:lambda:us-east-1:000000000000:function:app"

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock               { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }

type router struct {
	addr   string
	pin    string
	issuer *Issuer
	clock  *clock
	conns  chan *Conn
	logs   *testbin.Buffer
	srv    *Server
}

func startRouter(t *testing.T) *router { return startRouterOn(t, nil) }

// startRouterOn starts a router whose listener is wrap(a real one), if
// wrap is not nil.
func startRouterOn(t *testing.T, wrap func(net.Listener) net.Listener) *router {
	t.Helper()
	return startRouterWith(t, wrap, 0)
}

// startRouterWith also sets the server's handshake limit (0: default).
func startRouterWith(t *testing.T, wrap func(net.Listener) net.Listener, maxHandshakes int, opts ...func(*ServerConfig)) *router {
	t.Helper()
	cert, err := GenerateCertificate(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	iss, err := NewIssuer(bytes.Repeat([]byte("k"), 32), 5*time.Second, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	r := &router{pin: Pin(cert.Leaf), issuer: iss, clock: clk, conns: make(chan *Conn, 16), logs: &testbin.Buffer{}}
	sc := ServerConfig{
		TLS: ServerTLSConfig(cert),
		Authenticate: func(_ context.Context, h Hello) (Claims, error) {
			return iss.Redeem(h.Token, h.FunctionARN)
		},
		OnConn:           func(c *Conn) { r.conns <- c },
		HandshakeTimeout: 300 * time.Millisecond,
		MaxHandshakes:    maxHandshakes,
		Logger:           slog.New(slog.NewTextHandler(r.logs, nil)),
	}
	for _, o := range opts {
		o(&sc)
	}
	srv, err := NewServer(sc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	r.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *router) hello(t *testing.T, function string) Hello {
	t.Helper()
	tok, _, err := r.issuer.Mint(function)
	if err != nil {
		t.Fatal(err)
	}
	return Hello{Token: tok, FunctionARN: testFunction, RequestID: "req-1", MaxConcurrency: 4,
		DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli(), MemoryMB: 512}
}

// serve dials r and serves h on the tunnel; it returns the router's Conn.
func (r *router) serve(t *testing.T, h Hello, handler http.Handler) (*Conn, *Session) {
	t.Helper()
	nc, err := Dial(context.Background(), DialConfig{Addr: r.addr, Pin: r.pin, Hello: h})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	s := NewSession(nc, h.MaxConcurrency)
	go s.Serve(context.Background(), handler)
	t.Cleanup(func() { nc.Close(); <-s.Done() })
	select {
	case c := <-r.conns:
		t.Cleanup(func() { c.Close() })
		return c, s
	case <-time.After(5 * time.Second):
		t.Fatal("router never got the tunnel")
	}
	return nil, nil
}

// mustServeOK opens a tunnel to r and requires one request over it to
// succeed.
func (r *router) mustServeOK(t *testing.T, what string) {
	t.Helper()
	c, _ := r.serve(t, r.hello(t, testFunction), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	resp, err := get(t, c, "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %v %v", what, resp, err)
	}
	resp.Body.Close()
}

func get(t *testing.T, c *Conn, path string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://app"+path, nil)
	return c.RoundTrip(req)
}

func TestRoundTripOverTunnel(t *testing.T) {
	r := startRouter(t)
	c, _ := r.serve(t, r.hello(t, "app"), http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set(HeaderLoad, Load{InFlight: 1, CPU: 0.25, LeftMs: 900}.String())
		io.WriteString(w, "hello "+req.URL.Path)
	}))
	if got, want := c.Limit(), 4; got != want {
		t.Errorf("Limit() = %d, want %d (from SETTINGS)", got, want)
	}
	if got := c.Claims().Function; got != "app" {
		t.Errorf("Claims().Function = %q, want app", got)
	}
	resp, err := get(t, c, "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello /x" {
		t.Errorf("body = %q, want %q", body, "hello /x")
	}
	if l, ok := c.Load(); !ok || l.LeftMs != 900 || l.CPU != 0.25 {
		t.Errorf("Load() = %+v, %v; want the hint from the response", l, ok)
	}
}

func TestDrainFinishesInFlightAndClosesPromptly(t *testing.T) {
	r := startRouter(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	c, s := r.serve(t, r.hello(t, "app"), http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	}))
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := get(t, c, "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-started
	drained := make(chan time.Time, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Drain(ctx)
		drained <- time.Now()
	}()
	// After GOAWAY reaches the router, the instance takes no new stream.
	deadline := time.Now().Add(3 * time.Second)
	for !c.Draining() {
		if time.Now().After(deadline) {
			t.Fatal("router never saw GOAWAY")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c.CanTakeStream() {
		t.Error("CanTakeStream() on a draining instance")
	}
	if _, err := get(t, c, "/late"); !Unprocessed(err) {
		t.Errorf("late request error = %v, want one Unprocessed reports", err)
	}
	released := time.Now()
	close(release)
	if r := <-res; r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request = %q, %v; want it to finish", r.body, r.err)
	}
	// The router closes the tunnel once idle, so the instance does not wait
	// out x/net's one-second GOAWAY timer.
	if took := (<-drained).Sub(released); took > 700*time.Millisecond {
		t.Errorf("drain took %v after the last stream, want well under 1s", took)
	}
	select {
	case <-c.Done():
	case <-time.After(2 * time.Second):
		t.Error("router Conn not done after drain")
	}
}

func TestUnprocessedClassification(t *testing.T) {
	cases := map[string]struct {
		err  error
		want bool
	}{
		"nil":             {nil, false},
		"refused stream":  {StreamErrorForTest(1, "REFUSED_STREAM"), true},
		"other stream":    {StreamErrorForTest(1, "INTERNAL_ERROR"), false},
		"wrapped goaway":  {errors.Join(errors.New("ctx"), errors.New(msgGotGoAway)), true},
		"closed tunnel":   {errConnClosed, true},
		"connection lost": {errors.New("http2: client connection lost"), false},
		"eof":             {io.ErrUnexpectedEOF, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := Unprocessed(tc.err); got != tc.want {
				t.Errorf("Unprocessed(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestIssuerRoundTrip(t *testing.T) {
	iss, err := NewIssuer(bytes.Repeat([]byte("s"), 32), time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, minted, err := iss.Mint(testFunction + ":live")
	if err != nil {
		t.Fatal(err)
	}
	got, err := iss.Redeem(tok, "app")
	if err != nil {
		t.Fatalf("Redeem: %v", err)
	}
	if got != minted {
		t.Errorf("claims = %+v, want %+v", got, minted)
	}
	// Another router process with the same secret (a replica, or this one
	// restarted) cannot redeem it: only the minting process's record of
	// used tokens counts.
	other, _ := NewIssuer(bytes.Repeat([]byte("s"), 32), time.Second, nil)
	tok, _, _ = iss.Mint("app")
	if _, err := other.Redeem(tok, "app"); !errors.Is(err, ErrTokenOtherIssuer) {
		t.Errorf("another issuer redeemed a token: %v, want ErrTokenOtherIssuer", err)
	}
	if _, err := iss.Redeem(tok, "app"); err != nil {
		t.Errorf("the minting issuer, after another refused: %v", err)
	}
	if _, err := NewIssuer([]byte("short"), 0, nil); err == nil {
		t.Error("NewIssuer accepted a short secret")
	}
}

func TestParseLoad(t *testing.T) {
	for _, want := range []Load{{InFlight: 3, CPU: 0.42, LeftMs: 12000, Room: -1}, {InFlight: 1, CPU: 1, Full: true, LeftMs: 5},
		{InFlight: 1, CPU: 0.1, LeftMs: 5, Room: 2}, {InFlight: 1, CPU: 0.3, LeftMs: 5, Room: 0, RoomIn: 34500 * time.Microsecond},
		{InFlight: 1, CPU: 0.5, LeftMs: 5, Room: 1, Ahead: 45 * time.Millisecond}} {
		got, err := ParseLoad(want.String())
		if err != nil || got != want {
			t.Fatalf("ParseLoad(%q) = %+v, %v; want %+v", want.String(), got, err, want)
		}
	}
	// A hint from an older bootstrap, without full or room, still parses.
	if got, err := ParseLoad("inflight=2; cpu=0.10; left_ms=9"); err != nil || got.Full || got.InFlight != 2 || got.Room != -1 {
		t.Errorf("older hint: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "inflight", "inflight=x", "foo=1", "full=yes", "room=-3", "room=99999", "room_in_us=-1", "room_in_us=900000001", "room_in_us=1.5", "ahead_us=-1", "ahead_us=900000001"} {
		if _, err := ParseLoad(bad); err == nil {
			t.Errorf("ParseLoad(%q) succeeded", bad)
		}
	}
}

func TestHelloValidate(t *testing.T) {
	good := Hello{Token: "t", FunctionARN: "f", RequestID: "r", MaxConcurrency: 8, DeadlineUnixMs: 1, MemoryMB: 128}
	tests := map[string]struct {
		edit func(*Hello)
		ok   bool
	}{
		"good":                                   {func(*Hello) {}, true},
		"fits learnt":                            {func(h *Hello) { h.Fits = 3 }, true},
		"negative fits":                          {func(h *Hello) { h.Fits = -1 }, false},
		"fits past the limit":                    {func(h *Hello) { h.Fits = MaxStreamsLimit + 1 }, false},
		"no token":                               {func(h *Hello) { h.Token = "" }, false},
		"zero concurrency":                       {func(h *Hello) { h.MaxConcurrency = 0 }, false},
		"negative memory":                        {func(h *Hello) { h.MemoryMB = -1 }, false},
		"largest memory":                         {func(h *Hello) { h.MemoryMB = 10240 }, true},
		"memory past Lambda's":                   {func(h *Hello) { h.MemoryMB = 10241 }, false},
		"room due":                               {func(h *Hello) { h.Carried, h.RoomInUs = true, 34500 }, true},
		"negative room due":                      {func(h *Hello) { h.RoomInUs = -1 }, false},
		"ahead":                                  {func(h *Hello) { h.AheadUs = 45000 }, true},
		"negative ahead":                         {func(h *Hello) { h.AheadUs = -1 }, false},
		"ahead past Lambda's longest invocation": {func(h *Hello) { h.AheadUs = int64(16 * time.Minute / time.Microsecond) }, false},
		"room due past Lambda's longest invocation": {func(h *Hello) { h.RoomInUs = int64(16 * time.Minute / time.Microsecond) }, false},
		"linger":              {func(h *Hello) { h.LingerUs = new(int64(2000)) }, true},
		"no linger":           {func(h *Hello) { h.LingerUs = new(int64(0)) }, true},
		"negative linger":     {func(h *Hello) { h.LingerUs = new(int64(-1)) }, false},
		"linger past an hour": {func(h *Hello) { h.LingerUs = new(int64(61 * time.Minute / time.Microsecond)) }, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h := good
			tt.edit(&h)
			if err := h.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// failingListener is a fake for a fault a test cannot cause on demand
// without starving its own process: the first n Accepts fail as they do
// when the descriptor table is full.
type failingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// A hung instance is found by its silence to pings and closed, failing its
// streams, within two ping intervals: a stopped sandbox once kept taking
// requests for 30 s.
func TestHungInstanceIsClosed(t *testing.T) {
	r := startRouterWith(t, nil, 0, func(c *ServerConfig) { c.PingInterval = 200 * time.Millisecond })
	nc, err := Dial(context.Background(), DialConfig{Addr: r.addr, Pin: r.pin, Hello: r.hello(t, testFunction)})
	if err != nil {
		t.Fatal(err)
	}
	sc := &stoppableConn{Conn: nc, stopped: make(chan struct{}), ended: make(chan struct{})}
	t.Cleanup(func() { close(sc.ended) })
	s := NewSession(sc, 4)
	arrived := make(chan struct{})
	go s.Serve(context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done() // a request in flight when the sandbox stops
	}))
	t.Cleanup(func() { nc.Close() })
	c := <-r.conns
	t.Cleanup(func() { c.Close() })
	errc := make(chan error, 1)
	go func() {
		resp, err := get(t, c, "/")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	close(sc.stopped)
	start := time.Now()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the router kept a silent tunnel open for 5 s")
	}
	if err := <-errc; err == nil {
		t.Error("the request on the hung instance did not fail")
	}
	t.Logf("hung tunnel closed %v after the stop", time.Since(start))
	if c.CanTakeStream() {
		t.Error("a closed tunnel still takes streams")
	}
}
