package tunnel

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Protocol headers. Every Ferry-* header is stripped by the router before a
// response reaches the client.
const (
	// HeaderLoad rides on every response: the instance's load when it
	// answered, in the form Load.String produces.
	HeaderLoad = "Ferry-Load"
	// HeaderNack marks a 503 as a nack: the app never saw the request, and it
	// is safe to retry elsewhere. Its value is the reason.
	HeaderNack = "Ferry-Nack"
	// HeaderLastTry on a request tells the bootstrap that the router will
	// not try the request elsewhere (its body has been sent, or it is the
	// last attempt): take it rather than nack it for CPU.
	HeaderLastTry = "Ferry-Last-Try"
	// HeaderLoadStream marks the one stream the router opens at join for
	// the instance's load: the bootstrap answers it, not the app, with a
	// line in the form Load.String produces now and whenever it changes.
	HeaderLoadStream = "Ferry-Load-Stream"
	// HeaderUpgrade on a request asks the bootstrap to carry a protocol
	// upgrade to the app (its value, "websocket"): the bootstrap sends the
	// app the HTTP/1.1 Upgrade, and the stream then carries the upgraded
	// connection's bytes both ways.
	HeaderUpgrade = "Ferry-Upgrade"
	// HeaderUpgradeStatus on the response says the app switched protocols
	// (its value, "101"): the response's headers are the app's 101's, and
	// its body the app's bytes.
	HeaderUpgradeStatus = "Ferry-Upgrade-Status"
	// HeaderClaim marks the stream the router opens at join for the
	// request its invocation carried (the dial-back event's first): the
	// bootstrap runs that request then and answers the stream with its
	// response; the stream's own request never reaches the app.
	HeaderClaim = "Ferry-Claim"
	// HeaderDropCarried on a stream says the router will never claim the
	// request the invocation carried (its client left while the
	// invocation started): the bootstrap drops it unrun instead of
	// holding the stream for its claim, and runs the stream's own request.
	HeaderDropCarried = "Ferry-Drop-Carried"
	// HeaderPrefix starts every protocol header.
	HeaderPrefix = "Ferry-"
)

// IsProtocolHeader reports whether name (any case) is one of the tunnel
// protocol's headers, which only the router and the bootstrap may set.
func IsProtocolHeader(name string) bool {
	return len(name) >= len(HeaderPrefix) && strings.EqualFold(name[:len(HeaderPrefix)], HeaderPrefix)
}

// Load is the instance's load hint.
type Load struct {
	// InFlight is the streams in the app, leaving out the one answered
	// (it is ending).
	InFlight int
	// CPU is the share of the instance's vCPU those streams are expected
	// to use, 0..1.
	CPU float64
	// Full says a request of the function's usual kind would be refused
	// for CPU beside those InFlight streams.
	Full   bool
	LeftMs int64 // milliseconds left in the invocation
	// Room is how many more requests of the usual kind would be admitted
	// beside the InFlight ones now; -1 when the instance cannot tell (it
	// has learnt nothing yet, or does not admit by CPU).
	Room int
	// RoomIn, when the instance has no room (Full, or Room 0), is how
	// long from the hint until a request of the usual kind is expected to
	// fit: the CPU its requests have left, on its vCPU. 0: it cannot say.
	// The router may try one request then without a newer hint; the
	// instance judges it as any other.
	RoomIn time.Duration
	// Ahead is how long a request of the usual kind, started alone, is
	// expected to compute before its CPU is behind it but for a little;
	// 0: it cannot say (nothing learnt, or CPU-bound work, where another
	// would not fit beside one even then). The router may try one more
	// request that long after it last sent one the hint did not count;
	// the instance judges it as any other.
	Ahead time.Duration
	// At is when the router received the hint (not on the wire).
	At time.Time
}

// maxRoomIn bounds a hint's room_in_us and ahead_us: Lambda's longest
// invocation.
const maxRoomIn = 15 * time.Minute

// String formats l as "inflight=3; cpu=0.42; full=0; left_ms=12000; room=2"
// (no room when it is -1).
func (l Load) String() string {
	full := 0
	if l.Full {
		full = 1
	}
	s := fmt.Sprintf("inflight=%d; cpu=%.2f; full=%d; left_ms=%d", l.InFlight, l.CPU, full, l.LeftMs)
	if l.Room >= 0 {
		s += "; room=" + strconv.Itoa(l.Room)
	}
	if l.RoomIn > 0 {
		s += "; room_in_us=" + strconv.FormatInt(l.RoomIn.Microseconds(), 10)
	}
	if l.Ahead > 0 {
		s += "; ahead_us=" + strconv.FormatInt(l.Ahead.Microseconds(), 10)
	}
	return s
}

// ParseLoad parses the value of a Ferry-Load header. Unknown keys are
// ignored so that hints can grow.
func ParseLoad(s string) (Load, error) {
	l := Load{Room: -1}
	seen := 0
	for part := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Load{}, fmt.Errorf("load hint: malformed part %q", part)
		}
		var err error
		switch k {
		case "inflight":
			l.InFlight, err = strconv.Atoi(v)
			if err == nil && (l.InFlight < 0 || l.InFlight > MaxStreamsLimit) {
				err = fmt.Errorf("%d outside 0..%d", l.InFlight, MaxStreamsLimit)
			}
			seen++
		case "cpu":
			l.CPU, err = strconv.ParseFloat(v, 64)
			if err == nil && !(l.CPU >= 0 && l.CPU <= 1) { // NaN too
				err = fmt.Errorf("%v outside 0..1", l.CPU)
			}
			seen++
		case "full":
			switch v {
			case "0", "1":
				l.Full = v == "1"
			default:
				err = fmt.Errorf("want 0 or 1, got %q", v)
			}
			seen++
		case "left_ms":
			l.LeftMs, err = strconv.ParseInt(v, 10, 64)
			if err == nil && l.LeftMs < 0 {
				err = fmt.Errorf("%d is negative", l.LeftMs)
			}
			seen++
		case "room":
			l.Room, err = strconv.Atoi(v)
			if err == nil && (l.Room < 0 || l.Room > MaxStreamsLimit) {
				err = fmt.Errorf("%d outside 0..%d", l.Room, MaxStreamsLimit)
			}
			seen++
		case "room_in_us":
			l.RoomIn, err = parseAhead(v)
			seen++
		case "ahead_us":
			l.Ahead, err = parseAhead(v)
			seen++
		}
		if err != nil {
			return Load{}, fmt.Errorf("load hint: %s: %w", k, err)
		}
	}
	if seen == 0 {
		return Load{}, fmt.Errorf("load hint: no known keys in %q", s)
	}
	return l, nil
}

// parseAhead parses a hint's microseconds until something is expected,
// within maxRoomIn.
func parseAhead(v string) (time.Duration, error) {
	us, err := strconv.ParseInt(v, 10, 64)
	if err == nil && (us < 0 || us > maxRoomIn.Microseconds()) {
		err = fmt.Errorf("%d outside 0..%d", us, maxRoomIn.Microseconds())
	}
	if err != nil {
		return 0, err
	}
	return time.Duration(us) * time.Microsecond, nil
}
