package ring

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

// Headers between replicas. Both start with Ferry-, so the ingress strips
// them from what clients send.
const (
	// HeaderKey carries the peer key on every request to a peer's port.
	HeaderKey = "Ferry-Peer-Key"
	// HeaderProbe marks a health probe: the peer answers it itself, 200
	// while it is in the ring (with ProbeFailing as the body while its
	// calls to the Lambda API keep failing), 503 once it is leaving.
	HeaderProbe = "Ferry-Peer-Probe"
	// ProbeFailing is a probe's answer from a member whose Lambda calls
	// keep failing.
	ProbeFailing = "lambda-failing"
)

// Key is the peer key of replicas sharing secret (the token secret every
// replica is given): a request to the peer port is served only with it.
// It is derived, so the secret itself never crosses the wire.
func Key(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("ferry router peer v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// Authentic reports whether r carries key.
func Authentic(r *http.Request, key string) bool {
	got := r.Header.Get(HeaderKey)
	return subtle.ConstantTimeCompare([]byte(got), []byte(key)) == 1
}

// Transport carries requests to peers: HTTP/2 without TLS (h2c) on
// kept-alive connections, one per peer, pinged while idle so a peer that
// vanished is noticed within seconds.
type Transport struct {
	key string
	h2  *http2.Transport
}

// dialTimeout bounds a connection to a peer: peers share a network, and a
// request waits on it.
const dialTimeout = time.Second

// NewTransport returns a transport that presents key.
func NewTransport(key string) *Transport {
	return &Transport{key: key, h2: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 2 * time.Second,
		PingTimeout:     2 * time.Second,
	}}
}

// RoundTrip sends req to peer. req's URL is rewritten to the peer; its
// path, query and Host are kept.
func (t *Transport) RoundTrip(peer string, req *http.Request) (*http.Response, error) {
	u := *req.URL
	u.Scheme, u.Host = "http", peer
	req.URL = &u
	req.Header.Set(HeaderKey, t.key)
	return t.h2.RoundTrip(req)
}

// Probe asks peer how it is, within ctx.
func (t *Transport) Probe(ctx context.Context, peer string) Health {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+peer+"/", nil)
	if err != nil {
		return Down
	}
	req.Header.Set(HeaderProbe, "1")
	resp, err := t.RoundTrip(peer, req)
	if err != nil {
		return Down
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == ProbeFailing:
		return UpFailing
	case resp.StatusCode == http.StatusOK:
		return Up
	case resp.StatusCode == http.StatusServiceUnavailable:
		return Leaving
	}
	return Down // 403: not one of us (another key)
}

// Close closes the idle connections.
func (t *Transport) Close() { t.h2.CloseIdleConnections() }

// Unreached reports whether err says the request never reached the peer
// (its connection could not be made).
func Unreached(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
