package loglimit

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestBurstThenCountWhatWasHeldBack(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var l Limiter
	for range 1000 {
		l.Warn(log, "tunnel rejected", "reason", "tls handshake failed")
	}
	if n := strings.Count(buf.String(), "tunnel rejected"); n != Burst {
		t.Errorf("%d of 1000 warnings logged at once, want the burst of %d", n, Burst)
	}
	l.mu.Lock()
	l.last = l.last.Add(-time.Second) // a second later
	l.mu.Unlock()
	l.Warn(log, "tunnel rejected", "reason", "tls handshake failed")
	if !strings.Contains(buf.String(), "suppressed_since_last=968") {
		t.Errorf("the next warning does not count what was held back:\n%s", buf.String()[len(buf.String())-200:])
	}
}
