// Package background keeps track of work an app does after it has answered
// (flushing logs, writing analytics, revalidating a cache): Vercel's
// waitUntil. While any is pending, the invocation does not end on idle;
// at the drain before the deadline, what is still pending is cancelled and
// forgotten.
//
// A Go app in the bootstrap's process uses serve.WaitUntil. An app in its
// own process (any language) asks the bootstrap over loopback HTTP, at the
// URL in its FERRY_BACKGROUND_URL (which holds a secret: other processes
// cannot use it):
//
//	POST   $FERRY_BACKGROUND_URL            -> 201 {"id":"7"}: work begun
//	DELETE $FERRY_BACKGROUND_URL/7          -> 204: work done
//
// Work is registered while an invocation runs (before the answer that
// starts it); between invocations, registration answers 410. A
// registration not ended by the drain is dropped (its DELETE then answers
// 404); at most MaxPending are pending at once (429 beyond).
package background

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxPending bounds the registrations pending at once: an app that begins
// work in a loop and never ends it cannot grow the table.
const MaxPending = 1000

// Begin's refusals.
var (
	ErrTooMany = errors.New("too much background work pending")
	ErrClosed  = errors.New("no invocation is running: register background work before answering")
)

// Tracker counts pending background work. Its methods are safe for
// concurrent use.
type Tracker struct {
	now func() time.Time

	mu      sync.Mutex
	pending map[uint64]context.CancelFunc // guarded by mu
	next    uint64                        // guarded by mu
	ctx     context.Context               // guarded by mu; the current tasks' parent, cancelled by CancelAll
	cancel  context.CancelFunc            // guarded by mu
	since   time.Time                     // guarded by mu; when pending last went from 0 to more
	busy    time.Duration                 // guarded by mu; time with work pending, up to since
	lastEnd time.Time                     // guarded by mu; when pending last went to 0
	changed chan struct{}                 // buffered 1; a value when pending went to 0
	open    bool                          // guarded by mu; an invocation runs
	// hook, if set, is told whenever work goes from none to some (true)
	// or back (false); called with mu held.
	hook func(pending bool)
}

// New returns an empty Tracker.
func New() *Tracker {
	t := &Tracker{now: time.Now, pending: map[uint64]context.CancelFunc{}, changed: make(chan struct{}, 1)}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Begin registers work and returns its id and the context it runs under,
// cancelled at the drain.
func (t *Tracker) Begin() (uint64, context.Context, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.open {
		return 0, nil, ErrClosed
	}
	if len(t.pending) >= MaxPending {
		return 0, nil, ErrTooMany
	}
	t.next++
	ctx, cancel := context.WithCancel(t.ctx)
	if len(t.pending) == 0 {
		t.since = t.now()
		if t.hook != nil {
			t.hook(true)
		}
	}
	t.pending[t.next] = cancel
	return t.next, ctx, nil
}

// End marks work id done; false if it is not pending (ended already, or
// dropped at a drain).
func (t *Tracker) End(id uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	cancel, ok := t.pending[id]
	if !ok {
		return false
	}
	cancel()
	delete(t.pending, id)
	if len(t.pending) == 0 {
		t.settleLocked()
	}
	return true
}

func (t *Tracker) settleLocked() {
	now := t.now()
	t.busy += now.Sub(t.since)
	t.lastEnd = now
	if t.hook != nil {
		t.hook(false)
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// Go runs fn as background work of ctx's tracker (or, with none, as a
// plain goroutine): fn's context ends at the drain. It returns false if
// the work could not be registered (too much pending): fn does not run.
func Go(ctx context.Context, fn func(context.Context)) bool {
	t := FromContext(ctx)
	if t == nil {
		go fn(context.WithoutCancel(ctx))
		return true
	}
	id, bctx, err := t.Begin()
	if err != nil {
		return false
	}
	go func() {
		defer t.End(id)
		fn(bctx)
	}()
	return true
}

// Pending returns how much work is pending.
func (t *Tracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// Done receives a value whenever pending work went to none.
func (t *Tracker) Done() <-chan struct{} { return t.changed }

// IdleSince returns when the last pending work ended (zero if none ever
// did), and false while work is pending.
func (t *Tracker) IdleSince() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastEnd, len(t.pending) == 0
}

// TakeBusy returns the time work was pending since the last TakeBusy, and
// starts counting afresh.
func (t *Tracker) TakeBusy() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.busy
	if len(t.pending) > 0 {
		now := t.now()
		b += now.Sub(t.since)
		t.since = now
	}
	t.busy = 0
	return b
}

// Wait returns once no work is pending, or with ctx's error.
func (t *Tracker) Wait(ctx context.Context) error {
	for {
		if t.Pending() == 0 {
			return nil
		}
		select {
		case <-t.changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CancelAll cancels and forgets the pending work (the drain); it returns
// how much there was.
func (t *Tracker) CancelAll() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.pending)
	t.cancel()
	t.ctx, t.cancel = context.WithCancel(context.Background())
	clear(t.pending)
	if n > 0 {
		t.settleLocked()
	}
	return n
}

// Open starts an invocation: work may be registered until Close. It
// returns how much work an earlier one left pending (cancelled and
// forgotten: it cannot hold this invocation).
func (t *Tracker) Open() int {
	n := t.CancelAll()
	t.TakeBusy()
	t.mu.Lock()
	t.open = true
	t.mu.Unlock()
	select {
	case <-t.changed: // a signal left from the last one
	default:
	}
	return n
}

// Close ends the invocation: registration answers ErrClosed until Open.
// Call it once the work has been waited for (and CancelAll'd).
func (t *Tracker) Close() {
	t.mu.Lock()
	t.open = false
	t.mu.Unlock()
}

// SetHook sets (or, with nil, clears) the function told whenever work
// goes from none to some (true) or back (false). It is called with the
// tracker locked: it must not call the tracker.
func (t *Tracker) SetHook(hook func(pending bool)) {
	t.mu.Lock()
	t.hook = hook
	t.mu.Unlock()
}

type ctxKey struct{}

// NewContext returns ctx carrying t, for Go.
func NewContext(ctx context.Context, t *Tracker) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// FromContext returns the Tracker ctx carries, or nil.
func FromContext(ctx context.Context) *Tracker {
	t, _ := ctx.Value(ctxKey{}).(*Tracker)
	return t
}

// Handler serves the loopback API an app in its own process uses, under
// the path /secret: POST /secret begins work, DELETE /secret/{id} ends it.
// Without the secret, 404: only the app, whose environment holds it, can
// use it.
func (t *Tracker) Handler(secret string) http.Handler {
	prefix := "/" + secret
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok || secret == "" || (rest != "" && rest[0] != '/') {
			http.NotFound(w, r)
			return
		}
		id := strings.Trim(rest, "/")
		switch {
		case r.Method == http.MethodPost && id == "":
			n, _, err := t.Begin()
			if errors.Is(err, ErrClosed) {
				http.Error(w, err.Error(), http.StatusGone)
				return
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusTooManyRequests)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(map[string]string{"id": strconv.FormatUint(n, 10)})
		case r.Method == http.MethodDelete && id != "":
			n, err := strconv.ParseUint(id, 10, 64)
			if err != nil || !t.End(n) {
				http.Error(w, "no such background work pending (ended already, or dropped at the drain)", http.StatusNotFound)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Allow", "POST, DELETE")
			http.Error(w, "POST / begins background work; DELETE /{id} ends it", http.StatusMethodNotAllowed)
		}
	})
}
