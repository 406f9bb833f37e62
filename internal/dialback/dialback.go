// Package dialback defines the invoke payload that asks a ferry bootstrap to
// dial back to the router: {"ferry":{"v":1,"router":...}}. An event without
// the "ferry" key is an ordinary (direct) invocation. The package also
// holds what a bootstrap reports back: a dial-back invocation's Summary,
// and the CPU line it writes to the log of every invocation.
package dialback

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
)

// Version is the payload version this package speaks.
const Version = 1

// maxLingerMs bounds linger_ms (and linger_us): an hour, longer than any
// invocation.
const maxLingerMs = 3_600_000

// Payload is the value of the "ferry" key.
type Payload struct {
	V              int    `json:"v"`
	Router         string `json:"router"` // host:port of the router's tunnel listener
	Token          string `json:"token"`
	Pin            string `json:"pin"`      // see tunnel.Pin
	Function       string `json:"function"` // name or ARN the token is bound to
	MaxConcurrency int    `json:"max_concurrency"`
	// LingerMs is how long the router asks the instance to stay with no
	// request in flight before it ends; 0 leaves it to the bootstrap. The
	// function's own FERRY_IDLE_LINGER, when set, wins.
	LingerMs int `json:"linger_ms,omitempty"`
	// LingerUs, when present, is the linger to the microsecond and wins
	// over LingerMs; 0 asks the instance to end as soon as it is idle.
	// (Routers send both: a bootstrap that predates it reads LingerMs.)
	LingerUs *int64 `json:"linger_us,omitempty"`
	// Warm asks the instance to stay until its deadline's drain whether or
	// not requests come, whatever the linger (the function's own
	// FERRY_IDLE_LINGER included): the router keeps it as one of the
	// function's minimum of live instances.
	Warm bool `json:"warm,omitempty"`
	// First, when present, is the request the invocation was launched
	// for, as a Function URL event: the bootstrap runs it when the router
	// claims it on the tunnel (tunnel.HeaderClaim), and answers the claim
	// with its response. Until claimed it has not run.
	First json.RawMessage `json:"first,omitempty"`
}

// MaxFirstBytes bounds First: Lambda's own limit on a synchronous
// invoke's payload.
const MaxFirstBytes = 6 << 20

type envelope struct {
	Ferry *Payload `json:"ferry"`
}

// Parse returns the payload in event, or ok=false when event is not a
// dial-back (no "ferry" key, or not a JSON object). A "ferry" key holding an
// unusable payload is an error, never a direct invocation.
func Parse(event []byte) (p Payload, ok bool, err error) {
	var env envelope
	if json.Unmarshal(event, &env) != nil || env.Ferry == nil {
		return Payload{}, false, nil
	}
	if string(env.Ferry.First) == "null" {
		env.Ferry.First = nil
	}
	if err := env.Ferry.Validate(); err != nil {
		return Payload{}, true, err
	}
	return *env.Ferry, true, nil
}

// Validate reports the first field of p that cannot be used.
func (p Payload) Validate() error {
	switch {
	case p.V != Version:
		return fmt.Errorf("dial-back payload version %d, this bootstrap speaks %d", p.V, Version)
	case p.Router == "":
		return errors.New("dial-back payload: missing router")
	case p.Token == "":
		return errors.New("dial-back payload: missing token")
	case p.LingerMs < 0 || p.LingerMs > maxLingerMs:
		return fmt.Errorf("dial-back payload: linger_ms %d outside 0..%d", p.LingerMs, maxLingerMs)
	case p.LingerUs != nil && (*p.LingerUs < 0 || *p.LingerUs > maxLingerMs*1000):
		return fmt.Errorf("dial-back payload: linger_us %d outside 0..%d", *p.LingerUs, maxLingerMs*1000)
	case p.MaxConcurrency < 0 || p.MaxConcurrency > tunnel.MaxStreamsLimit:
		return fmt.Errorf("dial-back payload: max_concurrency %d outside 0..%d", p.MaxConcurrency, tunnel.MaxStreamsLimit)
	case len(p.First) > MaxFirstBytes:
		return fmt.Errorf("dial-back payload: first request of %d bytes exceeds %d", len(p.First), MaxFirstBytes)
	case len(p.First) > 0 && p.First[0] != '{':
		return errors.New("dial-back payload: first is not an HTTP event object")
	}
	if _, err := tunnel.ParsePin(p.Pin); err != nil {
		return fmt.Errorf("dial-back payload: %w", err)
	}
	return nil
}

// Linger returns the linger p asks for, and false if it asks for none.
func (p Payload) Linger() (time.Duration, bool) {
	switch {
	case p.LingerUs != nil:
		return time.Duration(*p.LingerUs) * time.Microsecond, true
	case p.LingerMs > 0:
		return time.Duration(p.LingerMs) * time.Millisecond, true
	}
	return 0, false
}

// WithLinger sets both of p's linger fields for d.
func (p Payload) WithLinger(d time.Duration) Payload {
	us := max(d.Microseconds(), 0)
	p.LingerUs = &us
	p.LingerMs = int((us + 999) / 1000)
	return p
}

// Marshal returns the event for p.
func Marshal(p Payload) ([]byte, error) {
	if p.V == 0 {
		p.V = Version
	}
	return json.Marshal(envelope{Ferry: &p})
}

// Summary is a dial-back invocation's response: what the instance did, for
// the router's metrics and its choice of linger.
type Summary struct {
	Requests int64  `json:"requests"`  // streams handed to the app
	Nacks    int64  `json:"nacks"`     // streams refused before the app saw them
	BusyMs   int64  `json:"busy_ms"`   // time with at least one request in the app
	BusyUs   int64  `json:"busy_us"`   // the same, to the microsecond
	Ended    string `json:"ended"`     // idle, deadline or router-closed
	LingerUs int64  `json:"linger_us"` // the idle linger the instance kept
	CPUUs    int64  `json:"cpu_us"`    // CPU the sandbox used during the invocation
	// BackgroundUs is the time background work (waitUntil) was pending
	// while no request was in flight: what it added to the bill.
	BackgroundUs int64 `json:"background_us"`
}

// JSON encodes s.
func (s Summary) JSON() []byte {
	b, _ := json.Marshal(s)
	return b
}

// CPULinePrefix begins the line the bootstrap writes to the function's log
// for each invocation: "FERRY CPU RequestId: <id>\tCPU Time: <ms> ms".
const CPULinePrefix = "FERRY CPU"

var cpuLineRE = regexp.MustCompile(`(?m)^` + CPULinePrefix + ` RequestId: (\S+)\tCPU Time: (\d+(?:\.\d+)?) ms$`)

// CPUFromLog returns the CPU time of invocation requestID (any, if empty)
// from a log tail: the last of its CPU lines. ok is false when the tail
// has none (a runtime other than ferry's, or an app that wrote past the
// tail's 4 KB after the line).
func CPUFromLog(tail, requestID string) (cpu time.Duration, ok bool) {
	m := cpuLineRE.FindAllStringSubmatch(tail, -1)
	for i := len(m) - 1; i >= 0; i-- {
		if requestID != "" && m[i][1] != requestID {
			continue
		}
		ms, err := strconv.ParseFloat(m[i][2], 64)
		if err != nil || ms < 0 || ms > 1e9 {
			return 0, false
		}
		return time.Duration(ms * float64(time.Millisecond)), true
	}
	return 0, false
}
