// Package cgroup gives a process tree the CPU and memory a Lambda sandbox
// of its size gets, with the Linux cgroup controllers (v1 or v2), and reads
// a process's own CPU use and entitlement from them.
//
// The Lambda emulator makes one Group per sandbox: a CPU quota of
// memory/1769 vCPU, a memory limit of the function's memory, freeze and
// thaw, and the group's CPU time and peak memory for REPORT lines. The
// bootstrap reads its own group (Self) to see, at nanosecond resolution,
// how busy its vCPU is.
//
// Groups are made below the caller's own cgroup in each hierarchy, so a
// sandbox never escapes the limits its emulator runs under.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Controllers this package uses. In v1 each may be its own hierarchy (as
// on this project's build machines: cpu and cpuacct mounted apart).
const (
	ctlCPU     = "cpu"
	ctlCPUAcct = "cpuacct"
	ctlMemory  = "memory"
	ctlFreezer = "freezer"
)

// DefaultPeriod is the CFS bandwidth period of a Group's CPU quota: short,
// so that a fractional vCPU is given out smoothly (a 0.29 vCPU sandbox runs
// 5.8 ms of every 20 ms, not 29 ms of every 100 ms).
const DefaultPeriod = 20 * time.Millisecond

// Limits are what a Group may use. Zero values mean no limit.
type Limits struct {
	CPU         float64       // vCPUs (cores); Lambda gives memory_mb/1769
	Period      time.Duration // CFS period for CPU; if zero, DefaultPeriod
	MemoryBytes int64
}

// LambdaCPU is the vCPU share Lambda gives a function of memoryMB: 1769 MB
// buys one vCPU, proportionally, up to 6 at 10240 MB.
func LambdaCPU(memoryMB int) float64 {
	return min(float64(memoryMB)/1769, 6)
}

// fsys is the cgroup filesystem seen by this process: where each
// controller's directory for a given cgroup path lives.
type fsys struct {
	v2 bool
	// dirs maps a controller to the directory of the process's own cgroup
	// in that controller's hierarchy (v2: the same directory for all).
	dirs map[string]string
}

// procRoot is /proc, and sysRoot is where mountinfo's mount points are
// found; tests point both into a temporary tree.
type roots struct{ proc, sys string }

var hostRoots = roots{proc: "/proc", sys: "/"}

// discover reads pid's cgroups and the mounts it sees. v1 is used when it
// has both cpu and memory; otherwise v2, when its cgroup has both.
func discover(r roots, pid string) (*fsys, error) {
	mounts, err := readMounts(filepath.Join(r.proc, pid, "mountinfo"))
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(r.proc, pid, "cgroup"))
	if err != nil {
		return nil, err
	}
	v1 := map[string]string{}
	var v2Path string
	haveV2 := false
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path, haveV2 = parts[2], true
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			m, ok := mounts.v1[c]
			if !ok {
				continue
			}
			rel, err := filepath.Rel(m.root, parts[2])
			if err != nil || strings.HasPrefix(rel, "..") {
				continue // our cgroup is outside what this mount shows
			}
			v1[c] = filepath.Join(r.sys, m.point, rel)
		}
	}
	if v1[ctlCPU] != "" && v1[ctlMemory] != "" {
		return &fsys{dirs: v1}, nil
	}
	if haveV2 && mounts.v2.point != "" {
		rel, err := filepath.Rel(mounts.v2.root, v2Path)
		if err == nil && !strings.HasPrefix(rel, "..") {
			dir := filepath.Join(r.sys, mounts.v2.point, rel)
			return &fsys{v2: true, dirs: map[string]string{ctlCPU: dir, ctlCPUAcct: dir, ctlMemory: dir, ctlFreezer: dir}}, nil
		}
	}
	return nil, errors.New("cgroup: no cpu and memory controllers in this process's cgroups")
}

type mount struct{ root, point string }

type mountTable struct {
	v1 map[string]mount // by controller
	v2 mount
}

// readMounts reads the cgroup mounts of a mountinfo file.
func readMounts(path string) (mountTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return mountTable{}, err
	}
	defer f.Close()
	t := mountTable{v1: map[string]mount{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 3 {
			continue
		}
		m := mount{root: unescape(pf[3]), point: unescape(pf[4])}
		switch sf[0] {
		case "cgroup2":
			if t.v2.point == "" {
				t.v2 = m
			}
		case "cgroup":
			for _, o := range strings.Split(sf[2], ",") {
				if _, seen := t.v1[o]; !seen {
					t.v1[o] = m
				}
			}
		}
	}
	return t, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readKey returns the value of "key N" in a flat-keyed file such as
// cpu.stat or memory.events.
func readKey(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %q", path, key)
}

func write(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup: writing %q to %s: %w", value, path, err)
	}
	return nil
}

var errNotExist = fs.ErrNotExist
