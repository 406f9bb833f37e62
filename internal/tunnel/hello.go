package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// ALPN is the application protocol both ends of a tunnel negotiate.
const ALPN = "ferry/1"

// MaxMessageSize bounds a handshake message (hello or answer) on the wire,
// excluding its 4-byte length prefix. A peer announcing more is rejected
// before anything is read into memory.
const MaxMessageSize = 4096

// Hello is the first message on a tunnel, sent by the bootstrap.
type Hello struct {
	Token          string `json:"token"`
	FunctionARN    string `json:"function"`
	RequestID      string `json:"request_id"`
	MaxConcurrency int    `json:"max_concurrency"`
	DeadlineUnixMs int64  `json:"deadline_ms"`
	MemoryMB       int    `json:"memory_mb"`
	// Fits is how many requests of the function's usual kind the instance
	// expects to run at once without slowing one past its CPU budget, from
	// what its sandbox has learnt; 0 when it has learnt nothing yet. The
	// router gives a new instance no more than this before its first
	// answer.
	Fits int `json:"fits,omitempty"`
	// LoadStream says the instance answers a load stream
	// (HeaderLoadStream), and its SETTINGS_MAX_CONCURRENT_STREAMS counts
	// one stream for it beyond MaxConcurrency.
	LoadStream bool `json:"load_stream,omitempty"`
	// Carried says the instance took the request its dial-back event
	// carried and is running it: the router claims its response on a
	// stream (HeaderClaim) instead of sending it. A bootstrap that
	// predates carrying never says so, and gets the request as a stream.
	Carried bool `json:"carried,omitempty"`
	// RoomInUs, for an instance that has no room beside its carried
	// request, is as Load.RoomIn: microseconds until a request of the
	// usual kind is expected to fit; 0 when it cannot say.
	RoomInUs int64 `json:"room_in_us,omitempty"`
	// AheadUs is as Load.Ahead, in microseconds: what the sandbox has
	// learnt of the usual request's CPU, for the router to try one more
	// that long after it sent one; 0 when it cannot say.
	AheadUs int64 `json:"ahead_us,omitempty"`
	// LingerUs is how long, in microseconds, the instance stays with
	// nothing in flight before it ends its invocation (what the router
	// asked, unless the function set its own or the instance is warm);
	// nil from a bootstrap that does not say. The router sends a request
	// it cannot send again (a last try) to an idle instance only while
	// that leaves time: a stream meeting the instance's GOAWAY is refused.
	LingerUs *int64 `json:"linger_us,omitempty"`
}

// Linger is LingerUs as a duration, and whether the hello said it.
func (h Hello) Linger() (time.Duration, bool) {
	if h.LingerUs == nil {
		return 0, false
	}
	return time.Duration(*h.LingerUs) * time.Microsecond, true
}

// Validate reports the first field of h that cannot be accepted.
func (h Hello) Validate() error {
	switch {
	case h.Token == "":
		return errors.New("hello: missing token")
	case h.FunctionARN == "":
		return errors.New("hello: missing function")
	case h.RequestID == "":
		return errors.New("hello: missing request id")
	case h.MaxConcurrency < 1 || h.MaxConcurrency > MaxStreamsLimit:
		return fmt.Errorf("hello: max concurrency %d outside 1..%d", h.MaxConcurrency, MaxStreamsLimit)
	case h.DeadlineUnixMs <= 0:
		return errors.New("hello: missing deadline")
	case h.MemoryMB < 0 || h.MemoryMB > maxMemoryMB:
		return fmt.Errorf("hello: memory %d MB outside 0..%d", h.MemoryMB, maxMemoryMB)
	case h.Fits < 0 || h.Fits > MaxStreamsLimit:
		return fmt.Errorf("hello: fits %d outside 0..%d", h.Fits, MaxStreamsLimit)
	case h.RoomInUs < 0 || h.RoomInUs > maxRoomIn.Microseconds():
		return fmt.Errorf("hello: room_in_us %d outside 0..%d", h.RoomInUs, maxRoomIn.Microseconds())
	case h.AheadUs < 0 || h.AheadUs > maxRoomIn.Microseconds():
		return fmt.Errorf("hello: ahead_us %d outside 0..%d", h.AheadUs, maxRoomIn.Microseconds())
	case h.LingerUs != nil && (*h.LingerUs < 0 || *h.LingerUs > maxLinger.Microseconds()):
		return fmt.Errorf("hello: linger_us %d outside 0..%d", *h.LingerUs, maxLinger.Microseconds())
	}
	return nil
}

// CheckDeadline reports a deadline no invocation can have at now: past
// already, or further off than Lambda's longest timeout (15 minutes),
// with a minute's allowance for clock skew either way. The router times
// drains and picks by it: a forged far deadline would keep an instance
// placed and its shutdown waiting for ever.
func (h Hello) CheckDeadline(now time.Time) error {
	d := time.UnixMilli(h.DeadlineUnixMs)
	switch {
	case d.Before(now.Add(-time.Minute)):
		return fmt.Errorf("hello: deadline %s has passed", d.UTC().Format(time.RFC3339))
	case d.After(now.Add(maxInvocation + time.Minute)):
		return fmt.Errorf("hello: deadline %s is beyond Lambda's %v limit", d.UTC().Format(time.RFC3339), maxInvocation)
	}
	return nil
}

const (
	maxInvocation = 15 * time.Minute // Lambda's longest timeout
	maxMemoryMB   = 10240            // Lambda's largest memory size
	// maxLinger bounds a hello's linger: the bootstrap's FERRY_IDLE_LINGER
	// allows up to an hour (an invocation's deadline ends it sooner).
	maxLinger = time.Hour
)

// MaxStreamsLimit is the largest per-instance concurrency a tunnel accepts
// (AWS Lambda Managed Instances allow up to 1,600 per environment).
const MaxStreamsLimit = 1600

// Answer is the router's reply to a Hello.
type Answer struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// writeMessage writes v as JSON behind a 4-byte big-endian length.
func writeMessage(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > MaxMessageSize {
		return fmt.Errorf("message of %d bytes exceeds %d", len(body), MaxMessageSize)
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	_, err = w.Write(buf)
	return err
}

// readMessage reads one length-prefixed JSON message into v, refusing
// messages over MaxMessageSize before allocating for them.
func readMessage(r io.Reader, v any) error {
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n == 0 || n > MaxMessageSize {
		return fmt.Errorf("message length %d outside 1..%d", n, MaxMessageSize)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding message: %w", err)
	}
	return nil
}
