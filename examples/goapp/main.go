// Command goapp is ferry's I/O-bound sample app: a plain net/http server on
// $PORT that the bootstrap runs as the function's app.
//
//	GET /work?cpu_ms=N&wait_ms=M&then_cpu_ms=K  burn N ms of CPU, wait M ms, burn K ms
//	POST /work?id=I&...  the same, as a request that changes something: with
//	             GOAPP_LEDGER=FILE set, it first appends I to FILE (tests
//	             count how often each ran: a started request is never
//	             replayed)
//	GET /render  server-side rendering's shape: /work with 10, 100 and 40 ms by default
//	GET /stream?chunks=N&interval_ms=M  send N chunks, M ms apart; with
//	             ?fail=1, break the response off after them
//	ANY /echo  the request as JSON; ?status=, ?cookie=, ?header=K:V and ?trailer= shape the reply
//	GET /binary  256 bytes 0x00..0xff as application/octet-stream
//	GET /after?ms=N  answer at once, then work N ms after the answer,
//	             registered with the bootstrap at $FERRY_BACKGROUND_URL (its
//	             waitUntil); with ?until=release, until GET /after/release;
//	             GET /after/done counts the works finished
//	GET /ws/echo  a WebSocket that sends back every message it gets
//	GET /ws/push?n=N&interval_ms=M  a WebSocket that sends N messages, M ms
//	             apart, then closes with 1000
//	GET /healthz  ok
//	POST /crash  exit at once, only if GOAPP_ALLOW_CRASH=1 (for tests); with
//	             ?port_lingers_ms=N, close this connection, reset every new
//	             one, and exit N ms later
//	POST /panic  panic in the handler, only if GOAPP_ALLOW_CRASH=1 (for tests)
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/ferryrun/ferry/bootstrap/serve"
	"github.com/ferryrun/ferry/internal/cpuburn"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	ln := &dyingListener{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /work", work)
	mux.HandleFunc("POST /work", ledgered(os.Getenv("GOAPP_LEDGER"), work))
	mux.HandleFunc("GET /render", render)
	mux.HandleFunc("GET /stream", stream)
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("GET /binary", binary)
	after := afterWork{release: make(chan struct{})}
	mux.HandleFunc("GET /after", after.start)
	mux.HandleFunc("GET /after/done", after.count)
	mux.HandleFunc("GET /after/release", after.releaseAll)
	mux.HandleFunc("GET /ws/echo", wsEcho)
	mux.HandleFunc("GET /ws/push", wsPush)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	if os.Getenv("GOAPP_ALLOW_CRASH") == "1" {
		mux.HandleFunc("POST /crash", ln.crash)
		mux.HandleFunc("POST /panic", func(http.ResponseWriter, *http.Request) { panic("goapp: asked to panic") })
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ferry sample app\n") })
	if os.Getenv("GOAPP_IN_PROCESS") == "1" {
		// Built as the function's own bootstrap: ferry's in-process mode
		// serves the same routes with no app process behind a proxy.
		serve.Start(mux)
		return
	}
	var err error
	if ln.Listener, err = net.Listen("tcp", "127.0.0.1:"+port); err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}

// dyingListener is the app's listener. Once dying, it resets whatever
// connects: the app can die as Linux sometimes ends a process, its
// connections closed a moment before its port, so that a client connects
// in between and is reset having sent its request to no one.
type dyingListener struct {
	net.Listener
	dying atomic.Bool
}

func (l *dyingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.dying.Load() {
			return c, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // close with a reset, as the kernel resets its backlog
		}
		c.Close()
	}
}

// crash exits at once, or with ?port_lingers_ms=N closes this connection,
// resets every new one and exits N ms later.
func (l *dyingListener) crash(w http.ResponseWriter, r *http.Request) {
	ms, err := intParam(r, "port_lingers_ms", 10_000)
	if err != nil || ms == 0 {
		os.Exit(3)
	}
	l.dying.Store(true)
	if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
		c.Close()
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	os.Exit(3)
}

func intParam(r *http.Request, name string, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > max {
		return 0, fmt.Errorf("%s must be an integer in 0..%d", name, max)
	}
	return n, nil
}

func work(w http.ResponseWriter, r *http.Request) { shaped(w, r, 0, 0, 0) }

// ledgered records each request's id in the file ledger (if set) before
// next runs: one line per time the app took it.
func ledgered(ledger string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ledger != "" {
			f, err := os.OpenFile(ledger, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, err = fmt.Fprintf(f, "%s\n", r.URL.Query().Get("id")) // one small append: whole or not at all
			f.Close()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		next(w, r)
	}
}

// render is a server-rendered page: a little CPU to parse and route, a
// wait for the data, then the CPU to render it.
func render(w http.ResponseWriter, r *http.Request) { shaped(w, r, 10, 100, 40) }

// shaped burns cpu_ms of CPU, waits wait_ms, then burns then_cpu_ms,
// each defaulting to the given figure.
func shaped(w http.ResponseWriter, r *http.Request, cpuDef, waitDef, thenDef int) {
	cpuMs, err1 := intParamOr(r, "cpu_ms", 60_000, cpuDef)
	waitMs, err2 := intParamOr(r, "wait_ms", 600_000, waitDef)
	thenMs, err3 := intParamOr(r, "then_cpu_ms", 60_000, thenDef)
	if err := firstErr(err1, err2, err3); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	start := time.Now()
	burned := cpuburn.Burn(time.Duration(cpuMs) * time.Millisecond)
	select {
	case <-time.After(time.Duration(waitMs) * time.Millisecond):
	case <-r.Context().Done():
		return
	}
	burned += cpuburn.Burn(time.Duration(thenMs) * time.Millisecond)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"cpu_ms": burned.Milliseconds(), "wait_ms": waitMs, "took_ms": time.Since(start).Milliseconds(), "pid": os.Getpid(),
		"started_ns": start.UnixNano(), "ended_ns": time.Now().UnixNano(),
	})
}

func intParamOr(r *http.Request, name string, max, def int) (int, error) {
	if r.URL.Query().Get(name) == "" {
		return def, nil
	}
	return intParam(r, name, max)
}

func stream(w http.ResponseWriter, r *http.Request) {
	chunks, err1 := intParam(r, "chunks", 1000)
	interval, err2 := intParam(r, "interval_ms", 60_000)
	if err := firstErr(err1, err2); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if chunks == 0 {
		chunks = 5
	}
	if r.URL.Query().Get("interval_ms") == "" {
		interval = 200
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rc := http.NewResponseController(w)
	for i := range chunks {
		if i > 0 {
			select {
			case <-time.After(time.Duration(interval) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "chunk %d at %d\n", i, time.Now().UnixMilli())
		rc.Flush()
	}
	if r.URL.Query().Get("fail") == "1" {
		panic(http.ErrAbortHandler) // the response ends unfinished: the connection is cut
	}
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	for _, c := range q["cookie"] {
		w.Header().Add("Set-Cookie", c)
	}
	for _, kv := range q["header"] {
		if k, v, ok := strings.Cut(kv, ":"); ok {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("X-Echo", "yes")
	w.Header().Set("Content-Type", "application/json")
	trailer := q.Get("trailer")
	if trailer != "" {
		w.Header().Set("Trailer", "X-Echo-Trailer")
	}
	status := http.StatusOK
	if s, err := strconv.Atoi(q.Get("status")); err == nil && s >= 200 && s <= 599 {
		status = s
	}
	cookies := map[string]string{}
	for _, c := range r.Cookies() {
		cookies[c.Name] = c.Value
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "host": r.Host,
		"headers": r.Header, "cookies": cookies, "body": string(body), "body_bytes": len(body),
	})
	if trailer != "" {
		w.Header().Set("X-Echo-Trailer", trailer)
	}
}

// binary answers ?bytes= bytes (256 by default) counting 0..255 over and
// over.
func binary(w http.ResponseWriter, r *http.Request) {
	n, err := intParamOr(r, "bytes", 64<<20, 256)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(b)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// afterWork is work done after the answer, as an app in any language would
// register it with ferry's bootstrap: POST to begin (before answering, so
// the invocation cannot end in between), DELETE to end.
type afterWork struct {
	done    atomic.Int64
	mu      sync.Mutex
	release chan struct{} // closed (and replaced) by /after/release
}

func (a *afterWork) releaseAll(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	close(a.release)
	a.release = make(chan struct{})
	a.mu.Unlock()
	io.WriteString(w, "released\n")
}

func (a *afterWork) start(w http.ResponseWriter, r *http.Request) {
	ms, err := intParamOr(r, "ms", 600_000, 100)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	api := os.Getenv("FERRY_BACKGROUND_URL")
	if api == "" {
		http.Error(w, "FERRY_BACKGROUND_URL is not set: not under ferry's bootstrap", http.StatusServiceUnavailable)
		return
	}
	resp, err := http.Post(api, "", nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	var begun struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&begun)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		http.Error(w, "background API answered "+resp.Status, http.StatusBadGateway)
		return
	}
	a.mu.Lock()
	release := a.release
	a.mu.Unlock()
	hold := r.URL.Query().Get("until") == "release"
	go func() {
		if hold {
			<-release
		} else {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		a.done.Add(1)
		req, _ := http.NewRequest(http.MethodDelete, api+"/"+begun.ID, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	fmt.Fprintf(w, "{\"background_ms\":%d}\n", ms)
}

func (a *afterWork) count(w http.ResponseWriter, _ *http.Request) {
	fmt.Fprintf(w, "{\"done\":%d}\n", a.done.Load())
}

// wsEcho sends back every message of a WebSocket until the client closes.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for {
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, msg); err != nil {
			return
		}
	}
}

// wsPush sends n messages, interval_ms apart, then closes normally.
func wsPush(w http.ResponseWriter, r *http.Request) {
	n, err1 := intParamOr(r, "n", 100_000, 10)
	interval, err2 := intParamOr(r, "interval_ms", 60_000, 10)
	if err := errors.Join(err1, err2); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context()) // answers the client's close; ends ctx then
	for i := range n {
		if err := c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf("push %d", i))); err != nil {
			return
		}
		select {
		case <-time.After(time.Duration(interval) * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
	c.Close(websocket.StatusNormalClosure, "done")
}
