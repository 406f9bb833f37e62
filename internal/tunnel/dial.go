package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// RejectedError is returned by Dial when the router refused the hello.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "router rejected tunnel: " + e.Reason }

// DialConfig is what the bootstrap needs to open a tunnel.
type DialConfig struct {
	Addr  string // router host:port
	Pin   string // router public key pin, see Pin
	Hello Hello
	// Timeout bounds TCP, TLS and the hello together. If zero, 5s.
	Timeout time.Duration
	// LocalAddr, if set, is the source address (benchmarks spread many
	// tunnels over several loopback addresses).
	LocalAddr net.Addr
}

// Dial opens a tunnel to the router and completes the handshake. The
// returned connection is ready for NewSession.
func Dial(ctx context.Context, cfg DialConfig) (net.Conn, error) {
	if err := cfg.Hello.Validate(); err != nil {
		return nil, err
	}
	tlsConf, err := ClientTLSConfig(cfg.Pin)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	d := net.Dialer{LocalAddr: cfg.LocalAddr}
	nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dialing router: %w", err)
	}
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	tc := tls.Client(nc, tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("tls with router: %w", err)
	}
	if err := writeMessage(tc, cfg.Hello); err != nil {
		nc.Close()
		return nil, fmt.Errorf("sending hello: %w", err)
	}
	var a Answer
	if err := readMessage(tc, &a); err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	if !a.OK {
		nc.Close()
		if a.Reason == "" {
			a.Reason = "no reason given"
		}
		return nil, &RejectedError{Reason: a.Reason}
	}
	nc.SetDeadline(time.Time{})
	return tc, nil
}

// IsRejected reports whether err is the router refusing the hello.
func IsRejected(err error) bool {
	var re *RejectedError
	return errors.As(err, &re)
}
