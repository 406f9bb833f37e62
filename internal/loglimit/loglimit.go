// Package loglimit rate-limits warnings that someone outside can cause at
// will (rejected connections, malformed or failing requests), so that they
// cannot flood the log, while saying how many it held back.
package loglimit

import (
	"log/slog"
	"sync"
	"time"
)

const (
	// Burst is how many warnings pass at once after a quiet spell.
	Burst = 32
	// Rate is how many a second pass after the burst.
	Rate = 5
)

// Limiter lets warnings through in bursts of Burst, then Rate a second,
// counting those it held back; the next warning it lets through carries
// the count as suppressed_since_last. The zero Limiter is ready to use.
type Limiter struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

// Warn logs msg at Warn level on log, unless the limit is spent.
func (l *Limiter) Warn(log *slog.Logger, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if l.last.IsZero() {
		l.tokens = Burst
	} else {
		l.tokens = min(Burst, l.tokens+now.Sub(l.last).Seconds()*Rate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	log.Warn(msg, args...)
}
