// Package cpuguard measures how busy the instance's CPUs are, so the
// bootstrap can nack new streams when more concurrency would only queue for
// CPU: a CPU-bound function gains nothing from sharing an invocation.
package cpuguard

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/proctree"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux that Lambda runs.
const clockTicks = 100

// Meter samples CPU time used by this process and by the process trees
// rooted at pids(), and reports it as a fraction of the CPUs available.
type Meter struct {
	// static after New
	pids   func() []int
	window time.Duration
	cpus   float64

	mu      sync.Mutex
	samples []sample // guarded by mu; oldest first, spanning about one window
}

type sample struct {
	at  time.Time
	cpu time.Duration
}

// New returns a Meter over window. pids may be nil. The CPUs available are
// GOMAXPROCS, which the Go runtime derives from the affinity mask and the
// cgroup CPU limit.
func New(window time.Duration, pids func() []int) *Meter {
	if pids == nil {
		pids = func() []int { return nil }
	}
	return &Meter{pids: pids, window: window, cpus: float64(runtime.GOMAXPROCS(0))}
}

// Run samples every window/5 until ctx ends.
func (m *Meter) Run(ctx context.Context) {
	t := time.NewTicker(m.window / 5)
	defer t.Stop()
	m.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample()
		}
	}
}

// Reset forgets past samples, e.g. after the sandbox was frozen.
func (m *Meter) Reset() {
	m.mu.Lock()
	m.samples = m.samples[:0]
	m.mu.Unlock()
}

func (m *Meter) sample() {
	s := sample{at: time.Now(), cpu: selfCPU()}
	for _, pid := range m.pids() {
		s.cpu += treeCPU(pid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples = append(m.samples, s)
	// Keep the newest sample older than the window as the baseline.
	for len(m.samples) > 2 && s.at.Sub(m.samples[1].at) >= m.window {
		m.samples = m.samples[1:]
	}
}

// Busy returns the CPU busy fraction over the last window, 0..1, and 0
// until two samples exist.
func (m *Meter) Busy() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) < 2 {
		return 0
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	wall := last.at.Sub(first.at)
	if wall <= 0 {
		return 0
	}
	f := float64(last.cpu-first.cpu) / (float64(wall) * m.cpus)
	return min(max(f, 0), 1)
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// treeCPU returns the CPU time of pid and its descendants.
func treeCPU(pid int) time.Duration {
	total := procCPU(pid)
	for _, c := range proctree.Descendants(pid) {
		total += procCPU(c)
	}
	return total
}

// procCPU reads utime+stime of one process from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the parenthesized command name; utime and stime are
	// fields 14 and 15 of the whole line, 12 and 13 after the name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}
