package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoFreezer means the group cannot be frozen through a cgroup (v1
// without the freezer hierarchy); signal the processes instead.
var ErrNoFreezer = errors.New("cgroup: no freezer controller")

// Manager makes Groups below one directory of its own, in each hierarchy,
// under the cgroup of the process that made it.
type Manager struct {
	// static after NewManager
	v2      bool
	parents map[string]string // controller -> the manager's directory
}

// NewManager makes (or reuses) a directory name below this process's own
// cgroup in each hierarchy. It fails where cgroups cannot be written (not
// Linux, not root, no cpu or memory controller): the caller then runs
// without limits and should say so.
func NewManager(name string) (*Manager, error) {
	return newManager(hostRoots, name)
}

func newManager(r roots, name string) (*Manager, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, fmt.Errorf("cgroup: bad manager name %q", name)
	}
	fs, err := discover(r, "self")
	if err != nil {
		return nil, err
	}
	m := &Manager{v2: fs.v2, parents: map[string]string{}}
	if fs.v2 {
		own := fs.dirs[ctlCPU]
		// Children get cpu and memory only if the parent hands them down;
		// the kernel refuses that while the parent itself holds processes,
		// unless it is the root.
		if err := write(filepath.Join(own, "cgroup.subtree_control"), "+cpu +memory"); err != nil {
			return nil, err
		}
		dir := filepath.Join(own, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		if err := write(filepath.Join(dir, "cgroup.subtree_control"), "+cpu +memory"); err != nil {
			return nil, err
		}
		for c := range fs.dirs {
			m.parents[c] = dir
		}
		return m, nil
	}
	for c, own := range fs.dirs {
		if c != ctlCPU && c != ctlCPUAcct && c != ctlMemory && c != ctlFreezer {
			continue
		}
		dir := filepath.Join(own, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		m.parents[c] = dir
	}
	// v1 memory limits nest only with hierarchy on; it is on by default
	// and fixed on current kernels, but set it where it can be.
	if d := m.parents[ctlMemory]; d != "" {
		if v, err := readInt(filepath.Join(d, "memory.use_hierarchy")); err == nil && v == 0 {
			write(filepath.Join(d, "memory.use_hierarchy"), "1")
		}
	}
	return m, nil
}

// Close removes the manager's directories. Remove every Group first.
func (m *Manager) Close() error {
	var errs []error
	for _, d := range m.distinct(m.parents) {
		if err := rmdir(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// distinct lists each directory of dirs once (v1 may co-mount cpu and
// cpuacct; v2 has one directory for all).
func (m *Manager) distinct(dirs map[string]string) []string {
	var out []string
	for _, d := range dirs {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Group is one process tree's cgroup in every hierarchy the manager uses.
// Its methods are safe for concurrent use; its directories never change.
type Group struct {
	m    *Manager
	dirs map[string]string // controller -> directory
}

// New makes a group named name with limits l. Processes join it with Add.
func (m *Manager) New(name string, l Limits) (*Group, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, fmt.Errorf("cgroup: bad group name %q", name)
	}
	g := &Group{m: m, dirs: map[string]string{}}
	for c, p := range m.parents {
		g.dirs[c] = filepath.Join(p, name)
	}
	for _, d := range m.distinct(g.dirs) {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			g.Remove()
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	if err := g.limit(l); err != nil {
		g.Remove()
		return nil, err
	}
	return g, nil
}

func (g *Group) limit(l Limits) error {
	period := l.Period
	if period <= 0 {
		period = DefaultPeriod
	}
	periodUs := period.Microseconds()
	quotaUs := int64(l.CPU * float64(periodUs))
	if l.CPU > 0 {
		quotaUs = max(quotaUs, 1000) // the kernel's minimum quota is 1 ms
	}
	cpu, mem := g.dirs[ctlCPU], g.dirs[ctlMemory]
	if g.m.v2 {
		if l.CPU > 0 {
			if err := write(filepath.Join(cpu, "cpu.max"), fmt.Sprintf("%d %d", quotaUs, periodUs)); err != nil {
				return err
			}
		}
		if l.MemoryBytes > 0 {
			if err := write(filepath.Join(mem, "memory.max"), strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
				return err
			}
			// Lambda has no swap: past the limit, the sandbox dies.
			write(filepath.Join(mem, "memory.swap.max"), "0")
		}
		return nil
	}
	if l.CPU > 0 {
		if err := write(filepath.Join(cpu, "cpu.cfs_period_us"), strconv.FormatInt(periodUs, 10)); err != nil {
			return err
		}
		if err := write(filepath.Join(cpu, "cpu.cfs_quota_us"), strconv.FormatInt(quotaUs, 10)); err != nil {
			return err
		}
	}
	if l.MemoryBytes > 0 {
		if err := write(filepath.Join(mem, "memory.limit_in_bytes"), strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
			return err
		}
		// With swap accounting, also cap memory+swap at the same figure.
		if _, err := os.Stat(filepath.Join(mem, "memory.memsw.limit_in_bytes")); err == nil {
			write(filepath.Join(mem, "memory.memsw.limit_in_bytes"), strconv.FormatInt(l.MemoryBytes, 10))
		}
	}
	return nil
}

// Add moves pid (the whole process, every thread) into the group.
func (g *Group) Add(pid int) error {
	for _, d := range g.m.distinct(g.dirs) {
		if err := write(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// Procs lists the processes in the group.
func (g *Group) Procs() []int {
	b, err := os.ReadFile(filepath.Join(g.dirs[ctlMemory], "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for f := range strings.FieldsSeq(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// Freeze stops every process of the group, as Lambda freezes a sandbox
// between invocations; Thaw resumes them. Without a freezer they return
// ErrNoFreezer.
func (g *Group) Freeze() error { return g.setFrozen(true) }

// Thaw resumes a frozen group.
func (g *Group) Thaw() error { return g.setFrozen(false) }

func (g *Group) setFrozen(frozen bool) error {
	if g.m.v2 {
		v := "0"
		if frozen {
			v = "1"
		}
		return write(filepath.Join(g.dirs[ctlCPU], "cgroup.freeze"), v)
	}
	d, ok := g.dirs[ctlFreezer]
	if !ok {
		return ErrNoFreezer
	}
	v := "THAWED"
	if frozen {
		v = "FROZEN"
	}
	return write(filepath.Join(d, "freezer.state"), v)
}

// Kill sends SIGKILL to every process in the group, thawing it so that
// frozen processes die at once.
func (g *Group) Kill() {
	if g.m.v2 {
		if write(filepath.Join(g.dirs[ctlCPU], "cgroup.kill"), "1") == nil {
			return
		}
	}
	for _, pid := range g.Procs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	g.Thaw()
}

// CPUUsage is the CPU time the group's processes have used.
func (g *Group) CPUUsage() (time.Duration, error) {
	if g.m.v2 {
		us, err := readKey(filepath.Join(g.dirs[ctlCPU], "cpu.stat"), "usage_usec")
		return time.Duration(us) * time.Microsecond, err
	}
	d, ok := g.dirs[ctlCPUAcct]
	if !ok {
		return 0, fmt.Errorf("cgroup: no cpuacct controller: %w", errNotExist)
	}
	ns, err := readInt(filepath.Join(d, "cpuacct.usage"))
	return time.Duration(ns), err
}

// Throttled is how often and for how long the CPU quota held the group
// back.
func (g *Group) Throttled() (periods int64, total time.Duration, err error) {
	stat := filepath.Join(g.dirs[ctlCPU], "cpu.stat")
	if periods, err = readKey(stat, "nr_throttled"); err != nil {
		return 0, 0, err
	}
	if g.m.v2 {
		us, err := readKey(stat, "throttled_usec")
		return periods, time.Duration(us) * time.Microsecond, err
	}
	ns, err := readKey(stat, "throttled_time")
	return periods, time.Duration(ns), err
}

// MemoryPeak is the most memory the group has held at once, in bytes.
func (g *Group) MemoryPeak() (int64, error) {
	mem := g.dirs[ctlMemory]
	if g.m.v2 {
		if n, err := readInt(filepath.Join(mem, "memory.peak")); err == nil {
			return n, nil
		}
		return readInt(filepath.Join(mem, "memory.current"))
	}
	return readInt(filepath.Join(mem, "memory.max_usage_in_bytes"))
}

// OOMKills counts processes the kernel killed for exceeding the group's
// memory limit.
func (g *Group) OOMKills() (int64, error) {
	mem := g.dirs[ctlMemory]
	if g.m.v2 {
		return readKey(filepath.Join(mem, "memory.events"), "oom_kill")
	}
	return readKey(filepath.Join(mem, "memory.oom_control"), "oom_kill")
}

// Remove deletes the group's directories. Its processes must have exited;
// Remove waits up to a second for the kernel to let go of them.
func (g *Group) Remove() error {
	var errs []error
	for _, d := range g.m.distinct(g.dirs) {
		if err := rmdir(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdir removes a cgroup directory, retrying while it is busy (exiting
// processes leave a group a moment after they are reaped).
func rmdir(d string) error {
	var err error
	for range 100 {
		err = syscall.Rmdir(d)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("cgroup: removing %s: %w", d, err)
}

// ReapSiblings removes the directories beside the manager's own (made by
// other managers under the same cgroup) whose names stale reports true
// for, killing and thawing whatever they still hold first. A manager whose
// process died without Close leaves its groups behind, and a frozen
// process in one of them outlives every SIGKILL until it is thawed: it
// would hold its ports and memory for ever. It returns how many such
// names it removed.
func (m *Manager) ReapSiblings(stale func(name string) bool) int {
	var dirs []string // the stale directories, in every hierarchy
	names := map[string]bool{}
	seen := map[string]bool{}
	for _, d := range m.distinct(m.parents) {
		parent := filepath.Dir(d)
		if seen[parent] {
			continue
		}
		seen[parent] = true
		entries, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() && stale(e.Name()) {
				dirs = append(dirs, filepath.Join(parent, e.Name()))
				names[e.Name()] = true
			}
		}
	}
	// Kill and thaw everywhere before removing anything: the processes die
	// only once their freezer hierarchy thaws, and no directory holding
	// them can go before that.
	for _, d := range dirs {
		walkGroups(d, func(dir string) {
			if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
				for f := range strings.FieldsSeq(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "freezer.state")); err == nil {
				write(filepath.Join(dir, "freezer.state"), "THAWED")
			}
			if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err == nil {
				write(filepath.Join(dir, "cgroup.freeze"), "0")
			}
		})
	}
	for _, d := range dirs {
		walkGroups(d, func(dir string) {
			if err := rmdir(dir); err != nil {
				names[filepath.Base(d)] = false
			}
		})
	}
	n := 0
	for _, ok := range names {
		if ok {
			n++
		}
	}
	return n
}

// walkGroups calls f on every cgroup directory below dir, deepest first,
// then on dir.
func walkGroups(dir string, f func(string)) {
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if e.IsDir() {
				walkGroups(filepath.Join(dir, e.Name()), f)
			}
		}
	}
	f(dir)
}
