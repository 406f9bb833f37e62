package server

import (
	"testing"
	"time"

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
