package localrun

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestFreeAddrHandsOutEachPortOnce: addresses FreeAddr gives, before
// anything listens on them, are never given again, to this process or
// another (a random choice alone repeated a port within 300 draws nearly
// always); a claim older than portClaim is taken over.
func TestFreeAddrHandsOutEachPortOnce(t *testing.T) {
	seen := map[string]bool{}
	var last string
	for range 300 {
		a, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("FreeAddr gave %s twice", a)
		}
		seen[a], last = true, a
	}
	_, p, err := net.SplitHostPort(last)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	if claimPort(port) {
		t.Fatalf("port %d claimed again while its claim is fresh", port)
	}
	old := time.Now().Add(-portClaim - time.Minute)
	if err := os.Chtimes(filepath.Join(os.TempDir(), "ferry-ports", p), old, old); err != nil {
		t.Fatal(err)
	}
	if !claimPort(port) {
		t.Errorf("port %d's stale claim was not taken over", port)
	}
}
