package cgroup

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sample is a moment of a group's CPU accounting: when it was taken, the
// CPU the group had used, how long its own quota had held it back, and,
// for each thread of each of its processes, the CPU it had used and how
// long it had waited on a run queue.
type Sample struct {
	At        time.Time
	CPU       time.Duration
	Throttled time.Duration
	threads   map[int]map[int]threadStat // process id -> thread id -> stat
}

type threadStat struct{ cpu, waited time.Duration }

// Sample reads the group's accounting now. Threads that exit between two
// samples take their waits with them: a difference of samples can only
// undercount.
func (g *Group) Sample() (Sample, error) {
	s := Sample{At: time.Now(), threads: map[int]map[int]threadStat{}}
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
		threads := map[int]threadStat{}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if st, ok := schedstat(filepath.Join(dir, t.Name(), "schedstat")); ok {
				threads[tid] = st
			}
		}
		s.threads[pid] = threads
	}
	return s, nil
}

// schedstat reads a thread's CPU time and run-queue wait: the first two
// fields of its schedstat, in ns.
func schedstat(path string) (threadStat, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return threadStat{}, false // gone, or no schedstats in this kernel
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return threadStat{}, false
	}
	cpu, err1 := strconv.ParseInt(f[0], 10, 64)
	waited, err2 := strconv.ParseInt(f[1], 10, 64)
	return threadStat{time.Duration(cpu), time.Duration(waited)}, err1 == nil && err2 == nil
}

// ContendedSince estimates the time, between earlier and s, that the
// group spent waiting for a core its CPU share (cpus) entitled it to,
// because other work on the machine had the cores. On Lambda, where each
// sandbox's vCPU is its own, this time does not exist; on a small shared
// machine it is what running many sandboxes at once costs each of them.
//
// The estimate errs low, never high:
//   - A thread's wait counts only beyond the CPU the rest of the group used
//     meanwhile: a thread may have waited behind its own siblings (the
//     proxy behind its app, one request behind another), which a sandbox
//     with its own vCPU does too.
//   - It takes the thread left waiting longest. Helper threads (Go's
//     sysmon, a thread pool) wait beside the one doing the work, and their
//     waits delay nothing; where work moved between threads or processes,
//     some of its wait is missed.
//   - The time the group's own quota held it back is taken off: a Lambda
//     sandbox pays that too.
//   - It is never more than the wall time less the CPU used at the
//     group's share: a sandbox with its own vCPU takes at least that.
//
// A thread's wait delays the work it was to do; whether it delays the end
// of an invocation that carries many requests is another matter, so the
// figure describes one request's invocation best.
func (s Sample) ContendedSince(earlier Sample, cpus float64) time.Duration {
	group := s.CPU - earlier.CPU
	throttled := s.Throttled - earlier.Throttled
	var waited time.Duration
	for pid, threads := range s.threads {
		for tid, t := range threads {
			t0, ok := earlier.threads[pid][tid]
			if ok && (t.cpu < t0.cpu || t.waited < t0.waited) {
				continue // a reused thread id: not the thread sampled before
			}
			cpu, wait := t.cpu-t0.cpu, t.waited-t0.waited
			waited = max(waited, wait-max(group-cpu, 0)-throttled)
		}
	}
	if cpus <= 0 {
		cpus = 1
	}
	bound := s.At.Sub(earlier.At) - time.Duration(float64(group)/cpus)
	return max(min(waited, bound), 0)
}
