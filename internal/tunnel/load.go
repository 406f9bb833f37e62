package tunnel

import (
	"fmt"
	"strconv"
	"strings"
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
	// HeaderPrefix starts every protocol header.
	HeaderPrefix = "Ferry-"
)

// Load is the instance's load hint.
type Load struct {
	InFlight int     // streams in the app, including the one answered
	CPU      float64 // CPU busy fraction over the guard window, 0..1
	LeftMs   int64   // milliseconds left in the invocation
}

// String formats l as "inflight=3; cpu=0.42; left_ms=12000".
func (l Load) String() string {
	return fmt.Sprintf("inflight=%d; cpu=%.2f; left_ms=%d", l.InFlight, l.CPU, l.LeftMs)
}

// ParseLoad parses the value of a Ferry-Load header. Unknown keys are
// ignored so that hints can grow.
func ParseLoad(s string) (Load, error) {
	var l Load
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
			seen++
		case "cpu":
			l.CPU, err = strconv.ParseFloat(v, 64)
			seen++
		case "left_ms":
			l.LeftMs, err = strconv.ParseInt(v, 10, 64)
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
