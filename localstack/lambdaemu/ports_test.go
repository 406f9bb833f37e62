package lambdaemu

import (
	"fmt"
	"net"
	"testing"
)

func TestPortsRange(t *testing.T) {
	tests := map[string]struct {
		rangeText string
		lo, hi    int
	}{
		"linux default":         {"32768\t60999\n", 22768, 32768},
		"unreadable":            {"", 22768, 32768},
		"high start":            {"49152 65535", 39152, 49152},
		"starts low: use above": {"1024 40000", 40001, 50001},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p := newPorts(tt.rangeText)
			if p.lo != tt.lo || p.hi != tt.hi {
				t.Errorf("range [%d, %d), want [%d, %d)", p.lo, p.hi, tt.lo, tt.hi)
			}
			if p.next < p.lo || p.next >= p.hi {
				t.Errorf("first port %d outside the range", p.next)
			}
		})
	}
}

// TestPortsTake: a port handed out is not handed out again until
// released, and a port something listens on is skipped.
func TestPortsTake(t *testing.T) {
	p := hostPorts()
	p.lo, p.hi = p.next, p.next+3 // a range of three, starting where it would
	if p.hi > 65535 {
		p.lo, p.hi, p.next = 60000, 60003, 60000
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p.lo+1))
	if err != nil {
		t.Skipf("port %d is in use by something else here: %v", p.lo+1, err)
	}
	defer ln.Close()

	a, err := p.take()
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.take()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a == p.lo+1 || b == p.lo+1 {
		t.Fatalf("took %d and %d from [%d, %d) with %d in use", a, b, p.lo, p.hi, p.lo+1)
	}
	if c, err := p.take(); err == nil {
		t.Fatalf("took %d with every port held or in use", c)
	}
	p.release(a)
	if c, err := p.take(); err != nil || c != a {
		t.Fatalf("after release(%d), take = %d, %v", a, c, err)
	}
}
