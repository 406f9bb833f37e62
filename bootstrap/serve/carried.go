package serve

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferryrun/ferry/bootstrap/admit"
)

// carriedBuffer is how much of a carried request's response is kept
// before the claim's stream takes it; past it the app's writes wait.
const carriedBuffer = 1 << 20

// claimWait bounds how long a carried request waits for the router's
// claim once the tunnel is up: past it, a router that never claims cannot
// keep the invocation (billed) alive.
const claimWait = firstStreamGrace

// carried is the request a dial-back event brought (dialback.Payload.First):
// the app runs it when the router claims it on the tunnel's first stream
// (tunnel.HeaderClaim), and its response goes out on that stream as the
// app writes it. It is the ResponseWriter the app writes to. (Started
// before the session was up, it would overlap the handshake and the
// session's start, whose CPU admission would charge to it: under -race a
// 10 ms request at 0.29 vCPU was learnt as 27 ms.)
type carried struct {
	mu     sync.Mutex
	cond   sync.Cond
	header http.Header // the app's, until it writes the status
	sent   http.Header // guarded by mu; the header as the status froze it
	status int         // guarded by mu; 0 until the app writes it
	buf    bytes.Buffer
	// done: the app's handler returned; aborted: it broke off (the claim
	// resets the stream); claimed: a claim has taken it; gone: nobody
	// will read it any more (the claim left, or it was given up).
	done, aborted, claimed, gone bool
	req                          *http.Request
	// cancel ends the request's context once its response is given up.
	cancel context.CancelFunc
	head   bool // a HEAD request's: its body's length is not the answer's
	// started: the claim started it in the app (guarded by mu).
	started bool
	// settled is closed once it started or was given up: streams that
	// come before its claim wait for it, so that they are judged beside
	// it (it runs whatever the CPU) and not it beside them.
	settled     chan struct{}
	settledOnce sync.Once
}

func newCarried() *carried {
	c := &carried{header: http.Header{}, settled: make(chan struct{})}
	c.cond.L = &c.mu
	return c
}

func (c *carried) Header() http.Header { return c.header }

func (c *carried) WriteHeader(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status != 0 || code < 200 {
		return // informational answers are not carried
	}
	c.status, c.sent = code, c.header.Clone()
	c.cond.Broadcast()
}

func (c *carried) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.status == 0 {
		c.mu.Unlock()
		c.WriteHeader(http.StatusOK)
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	for c.buf.Len() >= carriedBuffer && !c.gone {
		c.cond.Wait()
	}
	if c.gone {
		return 0, http.ErrHandlerTimeout
	}
	c.buf.Write(p)
	c.cond.Broadcast()
	return len(p), nil
}

// Flush lets a handler that flushes stream to the claim once it comes.
func (c *carried) Flush() {}

// finish records that the app's handler returned, broken off if aborted.
func (c *carried) finish(aborted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status == 0 && !aborted {
		c.status, c.sent = http.StatusOK, c.header.Clone()
	}
	c.done, c.aborted = true, aborted
	c.cond.Broadcast()
}

// take marks c claimed; false if a claim took it already or it was given
// up.
func (c *carried) take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claimed || c.gone {
		return false
	}
	c.claimed = true
	return true
}

// unclaimed reports whether c's response still waits for a claim.
func (c *carried) unclaimed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.claimed && !c.gone
}

// giveUp drops c's response: its writes fail from now on. It reports
// whether c was still unclaimed.
func (c *carried) giveUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := !c.claimed && !c.gone
	c.gone = true
	c.buf.Reset()
	c.cond.Broadcast()
	if c.cancel != nil {
		c.cancel()
	}
	c.settledOnce.Do(func() { close(c.settled) })
	return was
}

// wait blocks until the app's handler has returned (at once if it never
// started) or ctx ends; it reports whether the handler is not running.
func (c *carried) wait(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.started && !c.done && ctx.Err() == nil {
		c.cond.Wait()
	}
	return c.done || !c.started
}

// relay writes c's response to w as the app makes it: the status and
// header once the app has written them, then the body, flushed as it
// comes, then the trailers. It returns when the response is whole, or
// false if the router left first (ctx) or the app broke off.
func (c *carried) relay(ctx context.Context, w http.ResponseWriter) bool {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	ctl := http.NewResponseController(w)
	c.mu.Lock()
	for c.status == 0 && !c.done && ctx.Err() == nil {
		c.cond.Wait()
	}
	if ctx.Err() != nil || c.status == 0 {
		c.mu.Unlock()
		return false
	}
	for k, vs := range c.sent {
		w.Header()[k] = vs
	}
	if c.done && !c.aborted && !c.head && c.sent.Get("Content-Length") == "" && c.sent.Get("Trailer") == "" {
		// Whole already: its length, as a server that buffered it says.
		w.Header().Set("Content-Length", strconv.Itoa(c.buf.Len()))
	}
	w.WriteHeader(c.status)
	var chunk []byte
	for {
		for c.buf.Len() == 0 && !c.done && ctx.Err() == nil {
			c.cond.Wait()
		}
		if ctx.Err() != nil {
			c.mu.Unlock()
			return false
		}
		if c.buf.Len() == 0 { // done, and all of it sent
			break
		}
		chunk = append(chunk[:0], c.buf.Bytes()...)
		c.buf.Reset()
		c.cond.Broadcast() // a writer waiting for room may go on
		c.mu.Unlock()
		if _, err := w.Write(chunk); err != nil {
			return false
		}
		ctl.Flush()
		c.mu.Lock()
	}
	aborted := c.aborted
	trailers := carriedTrailers(c.sent, c.header)
	c.mu.Unlock()
	if aborted {
		return false
	}
	for k, vs := range trailers {
		w.Header()[k] = vs
	}
	return true
}

// carriedTrailers returns the trailers the app set, as header keys the
// tunnel's writer sends after the body: the ones it declared in sent's
// Trailer, and the ones it set with http.TrailerPrefix.
func carriedTrailers(sent, final http.Header) http.Header {
	t := http.Header{}
	for _, v := range sent.Values("Trailer") {
		for n := range strings.SplitSeq(v, ",") {
			if n = http.CanonicalHeaderKey(strings.TrimSpace(n)); n != "" && final[n] != nil {
				t[n] = final[n]
			}
		}
	}
	for k, vs := range final {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			t[k] = vs
		}
	}
	stripProtocol(t)
	return t
}

// carry keeps req, the request the dial-back event carried, for the
// router's claim, which starts it (startCarried).
func (s *streams) carry(req *http.Request) {
	c := newCarried()
	ctx, cancel := context.WithCancel(req.Context())
	c.req, c.cancel, c.head = req.WithContext(ctx), cancel, req.Method == http.MethodHead
	s.mu.Lock()
	s.carried = c
	s.mu.Unlock()
}

// startCarried runs c's request in the app: in flight from now, admitted
// whatever the CPU (it is the invocation's first), its response written to
// c.
func (s *streams) startCarried(c *carried) {
	req := c.req
	var ticket *admit.Ticket
	if s.adm != nil {
		ticket = s.adm.Take(admit.KindOf(req))
	}
	s.begin()
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	c.settledOnce.Do(func() { close(c.settled) })
	go func() {
		defer s.done()
		w := &loadWriter{ResponseWriter: c, s: s, ticket: ticket}
		p := serveRecovering(s.next, w, req)
		if ticket != nil {
			ticket.Done()
		}
		if p != nil && p.value != http.ErrAbortHandler {
			s.log.Error("handler panicked on the carried request", "panic", fmt.Sprint(p.value), "stack", string(p.stack))
		}
		switch {
		case p != nil && !w.wroteHeader && p.value != http.ErrAbortHandler:
			// The handler itself failed before answering: answer as an
			// http.Server would.
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			p = nil
		case p == nil && !w.wroteHeader:
			w.WriteHeader(http.StatusOK) // its hint, without the app's protocol headers
		}
		c.finish(p != nil)
		c.cancel() // as net/http does once a handler returns
	}()
}

// claim answers the router's claim stream with the carried request's
// response. A claim with nothing to claim (the bootstrap carried nothing,
// or a claim took it already) is a protocol error: answered 502, never
// passed to the app.
func (s *streams) claim(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	c := s.carried
	s.mu.Unlock()
	if c == nil || !c.take() {
		// Claimed already, or given up (its claim came too late): the
		// stream is reset, which the router reports as a request lost
		// after it reached the app.
		s.log.Warn("a claim found no carried request to answer", "carried", c != nil)
		panic(http.ErrAbortHandler)
	}
	defer s.poke() // the instance may be idle now
	s.startCarried(c)
	if !c.relay(r.Context(), w) {
		c.giveUp()
		// Reset the stream: a response cut short must not pass for whole.
		panic(http.ErrAbortHandler)
	}
}

// awaitingClaim reports whether a carried request waits for its claim;
// one that waited past claimWait since the tunnel came up is given up.
func (s *streams) awaitingClaim(up time.Time) bool {
	s.mu.Lock()
	c := s.carried
	s.mu.Unlock()
	if c == nil || !c.unclaimed() {
		return false
	}
	if time.Since(up) < claimWait {
		return true
	}
	if c.giveUp() {
		s.log.Warn("the router never claimed the carried request: dropped unrun", "waited", time.Since(up).Round(time.Millisecond))
	}
	return false
}

// awaitCarried holds a stream that came before the carried request's
// claim until that request has started (or was given up), so that the
// stream is judged beside it; false if the router gave up on the stream
// meanwhile. The router claims as the tunnel joins: the wait is short.
func (s *streams) awaitCarried(ctx context.Context) bool {
	c := s.carriedRequest()
	if c == nil {
		return true
	}
	select {
	case <-c.settled:
		return true
	default:
	}
	s.held.Add(1)
	defer func() {
		s.held.Add(-1)
		s.poke()
	}()
	select {
	case <-c.settled:
		return true
	case <-ctx.Done():
		return false
	}
}

// carriedRequest returns the carried request, or nil.
func (s *streams) carriedRequest() *carried {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.carried
}
