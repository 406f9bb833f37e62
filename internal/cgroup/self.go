package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Self reads the CPU use and CPU limit of the cgroup this process is in,
// which in a Lambda sandbox is the whole sandbox: the runtime, the app and
// anything they started. One Self is safe for use by one goroutine at a
// time.
type Self struct {
	// static after OpenSelf
	v2    bool
	f     *os.File // cpuacct.usage (ns) or cpu.stat (usage_usec); kept open
	limit float64
	buf   []byte
}

// OpenSelf opens this process's cgroup for reading. It fails where no
// cgroup CPU accounting is visible; the caller then falls back to
// per-process counters.
func OpenSelf() (*Self, error) { return openSelf(hostRoots) }

func openSelf(r roots) (*Self, error) {
	fs, err := discover(r, "self")
	if err != nil {
		return nil, err
	}
	s := &Self{v2: fs.v2, buf: make([]byte, 512)}
	path := filepath.Join(fs.dirs[ctlCPU], "cpu.stat")
	if !fs.v2 {
		d, ok := fs.dirs[ctlCPUAcct]
		if !ok {
			return nil, fmt.Errorf("cgroup: no cpuacct controller: %w", errNotExist)
		}
		path = filepath.Join(d, "cpuacct.usage")
	}
	if s.f, err = os.Open(path); err != nil {
		return nil, err
	}
	if _, err := s.CPUUsage(); err != nil {
		s.f.Close()
		return nil, err
	}
	s.limit = cpuLimit(fs, r)
	return s, nil
}

// CPUUsage is the CPU time the cgroup has used, at the kernel's resolution
// (nanoseconds in v1, microseconds in v2): one pread of an open file.
func (s *Self) CPUUsage() (time.Duration, error) {
	n, err := s.f.ReadAt(s.buf, 0)
	if n == 0 && err != nil {
		return 0, err
	}
	b := s.buf[:n]
	if !s.v2 {
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return time.Duration(ns), err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("cgroup: no usage_usec in cpu.stat")
}

// CPULimit is the cgroup's CPU quota in vCPUs (the tightest along its
// ancestors), or 0 when there is none.
func (s *Self) CPULimit() float64 { return s.limit }

// Close releases the open file.
func (s *Self) Close() error { return s.f.Close() }

// cpuLimit walks from the cgroup's own directory up to its hierarchy's
// mount point and returns the smallest quota/period found, or 0.
func cpuLimit(fs *fsys, r roots) float64 {
	best := 0.0
	dir := fs.dirs[ctlCPU]
	stop := filepath.Clean(r.sys)
	for range 32 {
		if q := quotaAt(fs.v2, dir); q > 0 && (best == 0 || q < best) {
			best = q
		}
		parent := filepath.Dir(dir)
		if parent == dir || parent == stop || !strings.HasPrefix(parent, stop) {
			break
		}
		if _, err := os.Stat(filepath.Join(parent, quotaFile(fs.v2))); err != nil {
			break // above the hierarchy's root
		}
		dir = parent
	}
	return best
}

func quotaFile(v2 bool) string {
	if v2 {
		return "cpu.max"
	}
	return "cpu.cfs_quota_us"
}

func quotaAt(v2 bool, dir string) float64 {
	if v2 {
		b, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
		if err != nil {
			return 0
		}
		f := strings.Fields(string(b))
		if len(f) != 2 || f[0] == "max" {
			return 0
		}
		q, err1 := strconv.ParseFloat(f[0], 64)
		p, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil || p <= 0 {
			return 0
		}
		return q / p
	}
	q, err1 := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
	p, err2 := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0
	}
	return float64(q) / float64(p)
}
