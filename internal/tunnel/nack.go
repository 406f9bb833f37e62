package tunnel

import (
	"errors"
	"net/http"

	"golang.org/x/net/http2"
)

// Nack reasons a bootstrap gives in the Ferry-Nack header.
const (
	NackDraining = "draining"
	NackCPU      = "cpu"
	NackLimit    = "limit"
	NackAppDown  = "app-starting"
	// NackAppUnreachable: the app did not accept the connection (it is
	// restarting, or its backlog is full): it never saw the request.
	NackAppUnreachable = "app-unreachable"
)

// Messages of x/net/http2 errors that mean a stream was never processed by
// the server. The package does not export them; TestUnprocessedMessages
// produces each from a real connection so an upgrade that changes them fails
// the tests instead of silently turning retries into 502s.
const (
	msgGotGoAway = "http2: Transport received Server's graceful shutdown GOAWAY"
	msgUnusable  = "http2: client conn not usable"
	// The connection closed before its first stream was sent (the
	// instance died right after its hello).
	msgNotEstablished = "http2: client conn could not be established"
)

// IsNack reports whether resp is a nack and returns its reason.
func IsNack(resp *http.Response) (string, bool) {
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		return "", false
	}
	reason := resp.Header.Get(HeaderNack)
	return reason, reason != ""
}

// Unprocessed reports whether err from a tunnel round trip proves that the
// bootstrap never handed the request to the app: the stream was refused
// (REFUSED_STREAM), lay above a GOAWAY's last stream id, or was never sent
// because the connection was already closing. Such a request is safe to
// retry on another instance. Any other error after the request was sent
// might have reached the app and must not be replayed.
func Unprocessed(err error) bool {
	if err == nil {
		return false
	}
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return true
	}
	if errors.Is(err, errConnClosed) {
		return true
	}
	return anyInTree(err, func(e error) bool {
		m := e.Error()
		return m == msgGotGoAway || m == msgUnusable || m == msgNotEstablished
	})
}

// anyInTree reports whether match holds for err or any error it wraps,
// following both Unwrap() error and Unwrap() []error.
func anyInTree(err error, match func(error) bool) bool {
	if err == nil {
		return false
	}
	if match(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return anyInTree(u.Unwrap(), match)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if anyInTree(e, match) {
				return true
			}
		}
	}
	return false
}

// errConnClosed is returned by Conn.RoundTrip for a conn already closed or
// draining: the request was not sent.
var errConnClosed = errors.New("tunnel: connection closed before the request was sent")
