package pool

import (
	"math"
	"sort"
)

// State is a snapshot of the pool for the admin endpoint.
type State struct {
	Function  string          `json:"function"`
	Instances []InstanceState `json:"instances"`
	Pending   int             `json:"pending_invocations"`
	Waiting   int             `json:"waiting_requests"`
	// Cover is how many requests a new instance is expected to take.
	Cover int `json:"cover"`
	// LingerUs is the idle linger a new instance is asked for, chosen
	// from LingerGaps recent gaps between requests and the overhead of an
	// invocation beyond its busy time.
	LingerUs   int64 `json:"linger_us"`
	OverheadUs int64 `json:"invocation_overhead_us"`
	LingerGaps int   `json:"linger_gaps"`
	// Share is how many requests recent tunnel invocations took on
	// average (0 until a few have ended); below 1.25, requests no live
	// instance can take go as plain invocations, PlainInFlight of them now.
	Share         float64 `json:"share"`
	PlainMode     bool    `json:"plain_mode"`
	PlainInFlight int     `json:"plain_in_flight"`
	// Failing names the failure class while launches keep failing
	// (requests fail at once); ConsecutiveFailures counts them.
	Failing             string `json:"failing,omitempty"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
	// MinInstances is the minimum of live instances kept (see
	// SetMinInstances); LaunchLeadMs how far ahead of a warm instance's
	// drain its replacement is launched, beyond the drain margin.
	MinInstances int   `json:"min_instances"`
	LaunchLeadMs int64 `json:"launch_lead_ms"`
	Stats        Stats `json:"stats"`
}

// InstanceState describes one live instance.
type InstanceState struct {
	RequestID string  `json:"request_id"`
	Limit     int     `json:"limit"`
	InFlight  int     `json:"in_flight"`
	Served    int64   `json:"served"`
	LeftMs    int64   `json:"left_ms"`
	Draining  bool    `json:"draining"`
	CPU       float64 `json:"cpu"`  // the CPU share its streams are expected to use
	Full      bool    `json:"full"` // its last hint: no room for a usual request
	// Room is how many more usual requests its last hint said it would
	// take beside the ones it had; -1 until it can tell.
	Room int `json:"room"`
	// Warm: one of the minimum, kept until its deadline's drain.
	Warm bool `json:"warm"`
	// LingerUs is how long it stays idle before it ends, as its hello
	// said; -1 if it did not say.
	LingerUs int64 `json:"linger_us"`
}

// InFlight returns the live instances and their streams in flight, from
// the load lists: no walk over the instances.
func (p *Pool) InFlight() (instances, streams int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for load, ins := range p.byLoad {
		instances += len(ins)
		streams += load * len(ins)
	}
	return instances, streams
}

// State returns a snapshot.
func (p *Pool) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := State{Function: p.cfg.Function, Pending: len(p.launches), Waiting: len(p.waiters), Cover: p.coverLocked(), Stats: p.stats}
	linger, overhead, gaps := p.linger.state()
	s.LingerUs, s.OverheadUs, s.LingerGaps = linger.Microseconds(), overhead.Microseconds(), gaps
	s.Failing, s.ConsecutiveFailures = p.failing, p.failures
	s.MinInstances, s.LaunchLeadMs = p.warm.min, p.warm.lead.Milliseconds()
	now := p.cfg.Now()
	s.Share, s.PlainInFlight = math.Round(p.sharing.share()*100)/100, p.plain
	s.PlainMode = p.cfg.Plain && p.sharing.predicts(now)
	for _, in := range p.instances {
		l, ok := in.conn.Load()
		if !ok {
			l.Room = -1
		}
		lingerUs := int64(-1) // not said
		if in.linger >= 0 {
			lingerUs = in.linger.Microseconds()
		}
		s.Instances = append(s.Instances, InstanceState{
			RequestID: in.conn.Hello().RequestID, Limit: in.limit, InFlight: in.inflight, Served: in.served,
			LeftMs: in.conn.Deadline().Sub(now).Milliseconds(), Draining: in.conn.Draining(), CPU: l.CPU, Full: l.Full, Room: l.Room, Warm: in.warm,
			LingerUs: lingerUs,
		})
	}
	sort.Slice(s.Instances, func(i, j int) bool { return s.Instances[i].RequestID < s.Instances[j].RequestID })
	return s
}
