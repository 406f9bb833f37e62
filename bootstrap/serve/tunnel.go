package serve

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/ferryrun/ferry/bootstrap/runtimeapi"
	"github.com/ferryrun/ferry/internal/dialback"
	"github.com/ferryrun/ferry/internal/tunnel"
)

// postSafety is kept between the end of the drain and the deadline, for
// closing the tunnel and posting the response.
const postSafety = 100 * time.Millisecond

// Summary is the response of a dial-back invocation.
type Summary struct {
	Requests int64  `json:"requests"` // streams handed to the app
	Nacks    int64  `json:"nacks"`    // streams refused before the app saw them
	BusyMs   int64  `json:"busy_ms"`  // time with at least one request in the app
	Ended    string `json:"ended"`    // idle, deadline or router-closed
}

// JSON encodes s.
func (s Summary) JSON() []byte {
	b, _ := json.Marshal(s)
	return b
}

// serveTunnel dials the router and serves streams until the instance has
// been idle for the linger, the deadline is within the drain margin, or the
// router closes the tunnel. It returns only after the tunnel is closed.
func (r *runner) serveTunnel(ctx context.Context, inv *runtimeapi.Invocation, p dialback.Payload, log *slog.Logger) (Summary, error) {
	timeout := time.Until(inv.Deadline)
	margin := r.cfg.DrainMarginFor(timeout)
	limit := r.cfg.MaxConcurrency
	if p.MaxConcurrency > 0 && p.MaxConcurrency < limit {
		limit = p.MaxConcurrency
	}
	nc, err := tunnel.Dial(ctx, tunnel.DialConfig{
		Addr: p.Router, Pin: p.Pin, Timeout: r.cfg.DialTimeout,
		Hello: tunnel.Hello{
			Token: p.Token, FunctionARN: inv.FunctionARN, RequestID: inv.RequestID,
			MaxConcurrency: limit, DeadlineUnixMs: inv.Deadline.UnixMilli(), MemoryMB: r.opts.MemoryMB,
		},
	})
	if err != nil {
		return Summary{}, err
	}

	meterCtx, stopMeter := context.WithCancel(ctx)
	defer stopMeter()
	r.meter.Reset() // samples from before the freeze are meaningless
	if r.cfg.CPUGuard > 0 {
		go r.meter.Run(meterCtx)
	}
	st := newStreams(r.opts.Handler, limit, inv.Deadline, r.cfg.CPUGuard, r.meter)
	sess := tunnel.NewSession(nc, limit)
	go sess.Serve(ctx, st)

	drainAt := inv.Deadline.Add(-margin)
	deadline := time.NewTimer(time.Until(drainAt))
	defer deadline.Stop()
	tick := time.NewTicker(min(max(r.cfg.IdleLinger/4, 5*time.Millisecond), 100*time.Millisecond))
	defer tick.Stop()

	ended := ""
	for ended == "" {
		select {
		case <-sess.Done():
			ended = "router-closed"
		case <-deadline.C:
			ended = "deadline"
		case <-tick.C:
			if st.idleFor() >= r.cfg.IdleLinger {
				ended = "idle"
			}
		}
	}
	st.startDrain()
	drainCtx, cancel := context.WithDeadline(context.Background(), inv.Deadline.Add(-postSafety))
	defer cancel()
	sess.Drain(drainCtx)
	if drainCtx.Err() != nil {
		log.Warn("drain cut short at the deadline; streams still running were reset", "in_flight", st.inFlight())
	}
	sum := st.summary()
	sum.Ended = ended
	return sum, nil
}
