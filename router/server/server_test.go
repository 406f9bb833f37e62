package server

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/internal/tunnel"
)

// TestTokensOutliveTheLaunchTimeout: an instance that dials back just
// inside the launch timeout redeems its token. Tokens once lived a fixed
// 30 s while the launch timeout may be 15 min, so a slow init within the
// timeout was refused at the tunnel and relaunched.
func TestTokensOutliveTheLaunchTimeout(t *testing.T) {
	for _, launch := range []time.Duration{time.Second, 30 * time.Second, 2 * time.Minute, 15 * time.Minute} {
		now := time.Unix(1_800_000_000, 0)
		iss, err := tunnel.NewIssuer(make([]byte, 32), tokenTTL(launch), func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := iss.Mint("fn")
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(launch - time.Millisecond)
		if _, err := iss.Redeem(tok, "fn"); err != nil {
			t.Errorf("launch timeout %v: a dial-back %v after the invoke was refused: %v", launch, launch-time.Millisecond, err)
		}
	}
}

// TestClientsLeaveDescriptorsForInstances: clients never take the
// descriptors tunnels and invocations need, however few there are.
func TestClientsLeaveDescriptorsForInstances(t *testing.T) {
	for _, tt := range []struct{ files, want int }{
		{0, 0},         // none known: no limit
		{96, 32},       // 64 kept
		{256, 192},     // a quarter kept
		{65535, 49151}, // Fargate's default
		{50, 1},        // too few to keep 64: clients still get one
	} {
		if got := clientConnLimit(tt.files); got != tt.want {
			t.Errorf("clientConnLimit(%d) = %d, want %d", tt.files, got, tt.want)
		}
	}
}

// TestClientConnectionsHeldToTheLimit: past the limit, a new client waits
// (in the listen backlog) until one closes, the router says so, and
// closing the listener releases an Accept held at the limit.
func TestClientConnectionsHeldToTheLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs testbin.Buffer
	ln := newWatchedListener(inner, &Router{log: slog.New(slog.NewTextHandler(&logs, nil))}, 1)
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 2 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	select {
	case <-accepted:
		t.Fatal("a second client connection was taken past the limit of one")
	case <-time.After(100 * time.Millisecond): // nothing comes: no event marks its absence
	}
	if !strings.Contains(logs.String(), "at their limit") {
		t.Errorf("the router did not say it held clients back:\n%s", logs.String())
	}
	first.Close()
	second, ok := <-accepted
	if !ok {
		t.Fatal("the second client was never taken once the first closed")
	}
	second.Close()
	// Held at the limit again, then closed: Accept returns.
	if c, err := net.Dial("tcp", inner.Addr().String()); err == nil {
		defer c.Close()
	}
	if third := <-accepted; third != nil {
		defer third.Close()
	}
	ln.Close()
	for range accepted {
	}
}
