package lambdaemu

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
)

// portSpan is how many ports below the kernel's ephemeral range the
// emulator hands to sandboxes' apps.
const portSpan = 10000

// ports gives each sandbox's app a port of its own. Lambda gives every
// sandbox its own network namespace; here they share the host's, so two
// apps must not be handed one port. A port from the ephemeral range (what
// listening on port 0 returns) is unsafe: between the emulator closing it
// and the app binding it, any outgoing connection may take it, or another
// sandbox be handed it too, and then one app answers for another. So ports
// come from just below that range, where the kernel never picks on its own,
// each checked free and held until its sandbox exits.
type ports struct {
	lo, hi int // [lo, hi)

	mu   sync.Mutex
	next int          // guarded by mu
	held map[int]bool // guarded by mu
}

// newPorts reads the ephemeral range; rangeText is the content of
// /proc/sys/net/ipv4/ip_local_port_range, or "" where it cannot be read.
func newPorts(rangeText string) *ports {
	ephemeral := 32768 // Linux's default start
	var a, b int
	if _, err := fmt.Sscanf(strings.TrimSpace(rangeText), "%d %d", &a, &b); err == nil && a > 0 {
		ephemeral = a
	}
	lo, hi := max(ephemeral-portSpan, 1024), ephemeral
	if hi-lo < 100 {
		// An ephemeral range that starts very low leaves no room below it:
		// take ports above it instead.
		lo, hi = max(b+1, 1024), min(max(b+1, 1024)+portSpan, 65536)
	}
	// Each emulator starts at its own place, so that two emulators on one
	// machine rarely try the same port at the same moment.
	return &ports{lo: lo, hi: hi, next: lo + rand.IntN(hi-lo), held: map[int]bool{}}
}

func hostPorts() *ports {
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	return newPorts(string(b))
}

// take returns a port nothing listens on and no live sandbox of this
// emulator holds.
func (p *ports) take() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.hi - p.lo {
		port := p.next
		p.next++
		if p.next >= p.hi {
			p.next = p.lo
		}
		if p.held[port] || !free(port) {
			continue
		}
		p.held[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d for the app", p.lo, p.hi-1)
}

// release hands port back once its sandbox has exited.
func (p *ports) release(port int) {
	p.mu.Lock()
	delete(p.held, port)
	p.mu.Unlock()
}

// free reports whether port can be listened on, on every address.
func free(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
