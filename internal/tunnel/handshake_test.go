package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHandshakeAttacks(t *testing.T) {
	type attack struct {
		do     func(t *testing.T, r *router) error // the client side of the attack
		reason string                              // what the router must log
	}
	dialWith := func(r *router, h Hello, pin string) error {
		nc, err := Dial(context.Background(), DialConfig{Addr: r.addr, Pin: pin, Hello: h})
		if err == nil {
			nc.Close()
		}
		return err
	}
	rawTLS := func(t *testing.T, r *router) *tls.Conn {
		conf, _ := ClientTLSConfig(r.pin)
		tc, err := tls.Dial("tcp", r.addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tc.Close() })
		return tc
	}
	attacks := map[string]attack{
		"wrong token": {
			do: func(t *testing.T, r *router) error {
				h := r.hello(t, "app")
				h.Token = "AAAA" + h.Token[4:]
				return dialWith(r, h, r.pin)
			},
			reason: ErrTokenSignature.Error(),
		},
		"garbage token": {
			do: func(t *testing.T, r *router) error {
				h := r.hello(t, "app")
				h.Token = "not-a-token"
				return dialWith(r, h, r.pin)
			},
			reason: ErrTokenMalformed.Error(),
		},
		"expired token": {
			do: func(t *testing.T, r *router) error {
				h := r.hello(t, "app")
				r.clock.add(6 * time.Second)
				return dialWith(r, h, r.pin)
			},
			reason: ErrTokenExpired.Error(),
		},
		"reused token": {
			do: func(t *testing.T, r *router) error {
				h := r.hello(t, "app")
				c, _ := r.serve(t, h, http.NotFoundHandler())
				c.Close()
				return dialWith(r, h, r.pin)
			},
			reason: ErrTokenReused.Error(),
		},
		"token of another router process sharing the secret": {
			do: func(t *testing.T, r *router) error {
				replica, _ := NewIssuer(bytes.Repeat([]byte("k"), 32), 5*time.Second, nil)
				tok, _, _ := replica.Mint("app")
				h := r.hello(t, "app")
				h.Token = tok
				return dialWith(r, h, r.pin)
			},
			reason: ErrTokenOtherIssuer.Error(),
		},
		"forged far deadline": {
			do: func(t *testing.T, r *router) error {
				h := r.hello(t, "app")
				h.DeadlineUnixMs = time.Now().Add(24 * time.Hour).UnixMilli()
				return dialWith(r, h, r.pin)
			},
			reason: "beyond Lambda's 15m0s limit",
		},
		"token for another function": {
			do: func(t *testing.T, r *router) error {
				return dialWith(r, r.hello(t, "other"), r.pin)
			},
			reason: ErrTokenSignature.Error(),
		},
		"wrong pin": {
			do: func(t *testing.T, r *router) error {
				other, _ := GenerateCertificate(time.Hour)
				err := dialWith(r, r.hello(t, "app"), Pin(other.Leaf))
				if err != nil && !strings.Contains(err.Error(), "does not match pin") {
					t.Errorf("client error = %v, want a pin mismatch", err)
				}
				return err
			},
			reason: "tls handshake failed",
		},
		"plain tcp garbage": {
			do: func(t *testing.T, r *router) error {
				nc, err := net.Dial("tcp", r.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
				nc.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err = io.ReadAll(nc)
				return errors.Join(errors.New("garbage sent"), err)
			},
			reason: "tls handshake failed",
		},
		"oversized hello": {
			do: func(t *testing.T, r *router) error {
				tc := rawTLS(t, r)
				var prefix [4]byte
				binary.BigEndian.PutUint32(prefix[:], 1<<20)
				tc.Write(prefix[:])
				tc.Write(bytes.Repeat([]byte("x"), 8192))
				_, err := io.ReadAll(tc)
				return errors.Join(errors.New("oversized hello sent"), err)
			},
			reason: "message length 1048576 outside",
		},
		"slow hello": {
			do: func(t *testing.T, r *router) error {
				tc := rawTLS(t, r)
				tc.Write([]byte{0, 0}) // half a length prefix, then nothing
				_, err := io.ReadAll(tc)
				return errors.Join(errors.New("slow hello"), err)
			},
			reason: "hello not received within handshake timeout",
		},
		"invalid hello": {
			do: func(t *testing.T, r *router) error {
				h := r.hello(t, "app")
				h.MaxConcurrency = 0
				tc := rawTLS(t, r)
				if err := writeMessage(tc, h); err != nil {
					t.Fatal(err)
				}
				var a Answer
				if err := readMessage(tc, &a); err != nil || a.OK {
					t.Fatalf("answer = %+v, %v; want a rejection", a, err)
				}
				return errors.New(a.Reason)
			},
			reason: "max concurrency 0 outside",
		},
	}
	for name, a := range attacks {
		t.Run(name, func(t *testing.T) {
			r := startRouter(t)
			if err := a.do(t, r); err == nil {
				t.Fatal("attack succeeded")
			}
			deadline := time.Now().Add(3 * time.Second)
			for !strings.Contains(r.logs.String(), a.reason) {
				if time.Now().After(deadline) {
					t.Fatalf("router log lacks %q:\n%s", a.reason, r.logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(r.logs.String(), "tunnel rejected") {
				t.Errorf("router log lacks a rejection line:\n%s", r.logs.String())
			}
			select {
			case c := <-r.conns:
				t.Errorf("router accepted a tunnel from %s", c.RemoteAddr())
			default:
			}
		})
	}
}

func TestTokenNeverLogged(t *testing.T) {
	r := startRouter(t)
	h := r.hello(t, "other")
	Dial(context.Background(), DialConfig{Addr: r.addr, Pin: r.pin, Hello: h})
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(r.logs.String(), "tunnel rejected"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the rejection was never logged:\n%s", r.logs.String())
		}
	}
	if strings.Contains(r.logs.String(), h.Token) {
		t.Fatalf("token appears in router log:\n%s", r.logs.String())
	}
}

// Accept errors are retried: one full descriptor table must not stop the
// router (it once ended Serve, and with it the process).
func TestAcceptErrorsAreRetried(t *testing.T) {
	fl := &failingListener{}
	fl.n.Store(5)
	r := startRouterOn(t, func(ln net.Listener) net.Listener { fl.Listener = ln; return fl })
	r.mustServeOK(t, "after accept errors")
	if got := r.srv.AcceptErrors(); got != 5 {
		t.Errorf("AcceptErrors = %d, want 5", got)
	}
	if !strings.Contains(r.logs.String(), "accepting tunnel failed; retrying") {
		t.Errorf("accept errors not logged:\n%s", r.logs.String())
	}
}

func TestHelloDeadline(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cases := map[string]struct {
		deadline time.Time
		ok       bool
	}{
		"a minute off":             {now.Add(time.Minute), true},
		"Lambda's longest":         {now.Add(15 * time.Minute), true},
		"skewed a little":          {now.Add(15*time.Minute + 30*time.Second), true},
		"beyond any invocation":    {now.Add(20 * time.Minute), false},
		"years off":                {now.Add(24 * 365 * time.Hour), false},
		"just passed (clock skew)": {now.Add(-30 * time.Second), true},
		"long passed":              {now.Add(-time.Hour), false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := Hello{DeadlineUnixMs: tc.deadline.UnixMilli()}
			if err := h.CheckDeadline(now); (err == nil) != tc.ok {
				t.Errorf("CheckDeadline = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// Connections that never speak (a half-open flood) hold no handshake slot:
// a real tunnel gets through while they wait, and the rejections they
// cause do not flood the log (560 of them once blocked every cold start
// and wrote 7,078 warnings in 15 s).
func TestSilentConnectionsDoNotBlockTunnels(t *testing.T) {
	r := startRouterWith(t, nil, 4)
	var silent []net.Conn
	for range 20 { // five times the handshake slots
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	r.mustServeOK(t, "tunnel beside 20 silent connections")
	if strings.Contains(r.logs.String(), "too many handshakes") {
		t.Errorf("silent connections took handshake slots:\n%s", r.logs.String())
	}
}

// stoppableConn is a fake for a stopped sandbox (SIGSTOP would stop the
// test itself): once stopped, the bootstrap's end reads and writes
// nothing, and the connection stays open.
type stoppableConn struct {
	net.Conn
	stopped chan struct{}
	ended   chan struct{} // closed when the test is over: the process is killed
}

func (c *stoppableConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	return n, c.hang(err)
}

func (c *stoppableConn) Write(p []byte) (int, error) {
	if err := c.hang(nil); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// hang blocks while the process is stopped, until the test ends.
func (c *stoppableConn) hang(err error) error {
	select {
	case <-c.stopped:
		<-c.ended
		return net.ErrClosed
	default:
		return err
	}
}
