package cgroup

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sample is a moment of a group's CPU accounting: when it was taken, the
// CPU the group had used, how long its own quota had held it back, and how
// long each thread of each of its processes had waited on a run queue.
type Sample struct {
	At        time.Time
	CPU       time.Duration
	Throttled time.Duration
	waited    map[int]map[int]time.Duration // process id -> thread id -> wait
}

// Sample reads the group's accounting now. Threads that exit between two
// samples take their waits with them: a difference of samples can only
// undercount.
func (g *Group) Sample() (Sample, error) {
	s := Sample{At: time.Now(), waited: map[int]map[int]time.Duration{}}
	var err error
	if s.CPU, err = g.CPUUsage(); err != nil {
		return Sample{}, err
	}
	if _, s.Throttled, err = g.Throttled(); err != nil {
		return Sample{}, err
	}
	for _, pid := range g.Procs() {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
		tasks, err := os.ReadDir(dir)
		if err != nil {
			continue // gone
		}
		threads := map[int]time.Duration{}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if d, ok := runDelay(filepath.Join(dir, t.Name(), "schedstat")); ok {
				threads[tid] = d
			}
		}
		s.waited[pid] = threads
	}
	return s, nil
}

// runDelay is how long a thread has waited on a run queue: the second
// field of its schedstat, in ns.
func runDelay(path string) (time.Duration, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false // gone, or no schedstats in this kernel
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(ns), err == nil
}

// ContendedSince estimates the time, between earlier and s, that the
// group spent waiting for a core its CPU share (cpus) entitled it to,
// because other work on the machine had the cores. On Lambda, where each
// sandbox's vCPU is its own, this time does not exist; on a small shared
// machine it is what running many sandboxes at once costs each of them.
//
// The estimate errs low, never high:
//   - It takes the thread that waited longest. A runtime's helper
//     threads (Go's sysmon, a thread pool) and a proxy idle while its app
//     computes wait beside the thread doing the work, and their waits
//     delay nothing; where work moved between threads or processes, some
//     of its wait is missed.
//   - The time the group's own quota held it back is taken off: a Lambda
//     sandbox pays that too.
//   - It is never more than the wall time less the CPU used at the
//     group's share: a sandbox with its own vCPU takes at least that.
func (s Sample) ContendedSince(earlier Sample, cpus float64) time.Duration {
	var waited time.Duration
	for pid, threads := range s.waited {
		for tid, d := range threads {
			if d0, ok := earlier.waited[pid][tid]; ok {
				d -= d0
			}
			waited = max(waited, d) // a reused thread id starts again from 0
		}
	}
	c := waited - (s.Throttled - earlier.Throttled)
	if cpus <= 0 {
		cpus = 1
	}
	bound := s.At.Sub(earlier.At) - time.Duration(float64(s.CPU-earlier.CPU)/cpus)
	return max(min(c, bound), 0)
}
