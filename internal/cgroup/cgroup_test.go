package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferryrun/ferry/internal/cpuburn"
)

// The test binary doubles as the process put under limits: with
// CGROUP_TEST_BURN=<ms> it burns that much CPU on each of
// CGROUP_TEST_THREADS threads and prints the wall time; with
// CGROUP_TEST_ALLOC=<MiB> it touches that much memory.
func TestMain(m *testing.M) {
	if v := os.Getenv("CGROUP_TEST_BURN"); v != "" {
		ms, _ := strconv.Atoi(v)
		threads, _ := strconv.Atoi(os.Getenv("CGROUP_TEST_THREADS"))
		start := time.Now()
		done := make(chan struct{})
		for range max(threads, 1) {
			go func() { cpuburn.Burn(time.Duration(ms) * time.Millisecond); done <- struct{}{} }()
		}
		for range max(threads, 1) {
			<-done
		}
		fmt.Println(time.Since(start).Milliseconds())
		if os.Getenv("CGROUP_TEST_HOLD") != "" {
			// Keep the threads, and their accounting, until killed. (An
			// empty select would be a deadlock, which Go ends at once.)
			time.Sleep(time.Hour)
		}
		os.Exit(0)
	}
	if v := os.Getenv("CGROUP_TEST_ALLOC"); v != "" {
		mib, _ := strconv.Atoi(v)
		var keep [][]byte
		for range mib {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println(len(keep))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeTree writes a /proc/self and cgroup mounts under a temporary root.
func fakeTree(t *testing.T, mountinfo, cgroup string, dirs ...string) roots {
	t.Helper()
	root := t.TempDir()
	self := filepath.Join(root, "proc", "self")
	os.MkdirAll(self, 0o755)
	os.WriteFile(filepath.Join(self, "mountinfo"), []byte(mountinfo), 0o644)
	os.WriteFile(filepath.Join(self, "cgroup"), []byte(cgroup), 0o644)
	for _, d := range dirs {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	return roots{proc: filepath.Join(root, "proc"), sys: root}
}

func TestDiscover(t *testing.T) {
	tests := map[string]struct {
		mountinfo, cgroup string
		wantV2            bool
		want              map[string]string // controller -> dir below the fake root
	}{
		"v1 with cpu and cpuacct apart, memory nested": {
			mountinfo: "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n" +
				"32 30 0:29 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n" +
				"34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
				"36 30 0:33 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n" +
				"40 30 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
			cgroup: "6:freezer:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n",
			want: map[string]string{"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
				"memory": "/sys/fs/cgroup/memory/process_api/abc", "freezer": "/sys/fs/cgroup/freezer"},
		},
		"v1 with cpu,cpuacct co-mounted": {
			mountinfo: "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n" +
				"34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
			cgroup: "4:memory:/a\n1:cpu,cpuacct:/a\n",
			want: map[string]string{"cpu": "/sys/fs/cgroup/cpu,cpuacct/a", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/a",
				"memory": "/sys/fs/cgroup/memory/a"},
		},
		"v2 in a container whose mount root is its own cgroup": {
			mountinfo: "40 30 0:37 /kube/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			cgroup:    "0::/kube/pod1/app\n",
			wantV2:    true,
			want: map[string]string{"cpu": "/sys/fs/cgroup/app", "cpuacct": "/sys/fs/cgroup/app",
				"memory": "/sys/fs/cgroup/app", "freezer": "/sys/fs/cgroup/app"},
		},
		"mount point with an escaped space": {
			mountinfo: "40 30 0:37 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n",
			cgroup:    "0::/x\n",
			wantV2:    true,
			want: map[string]string{"cpu": "/sys/fs/my cgroup/x", "cpuacct": "/sys/fs/my cgroup/x",
				"memory": "/sys/fs/my cgroup/x", "freezer": "/sys/fs/my cgroup/x"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := fakeTree(t, tt.mountinfo, tt.cgroup)
			fs, err := discover(r, "self")
			if err != nil {
				t.Fatal(err)
			}
			if fs.v2 != tt.wantV2 {
				t.Errorf("v2 = %v, want %v", fs.v2, tt.wantV2)
			}
			for c, want := range tt.want {
				if got := strings.TrimPrefix(fs.dirs[c], r.sys); got != want {
					t.Errorf("%s dir = %q, want %q", c, got, want)
				}
			}
		})
	}
	t.Run("no cgroups at all is an error", func(t *testing.T) {
		r := fakeTree(t, "1 0 0:1 / / rw - ext4 /dev/sda rw\n", "")
		if _, err := discover(r, "self"); err == nil {
			t.Fatal("want an error")
		}
	})
}

// TestSelfLimitAlongAncestors reads the tightest quota on the way up.
func TestSelfLimitAlongAncestors(t *testing.T) {
	r := fakeTree(t, "31 30 0:28 / /cg/cpu rw - cgroup cgroup rw,cpu\n"+
		"32 30 0:29 / /cg/cpuacct rw - cgroup cgroup rw,cpuacct\n"+
		"34 30 0:31 / /cg/memory rw - cgroup cgroup rw,memory\n",
		"1:cpu:/emu/sb\n2:cpuacct:/emu/sb\n4:memory:/emu/sb\n",
		"cg/cpu/emu/sb", "cg/cpuacct/emu/sb", "cg/memory/emu/sb")
	put := func(p, v string) { os.WriteFile(filepath.Join(r.sys, p), []byte(v), 0o644) }
	put("cg/cpu/cpu.cfs_quota_us", "-1\n")
	put("cg/cpu/cpu.cfs_period_us", "100000\n")
	put("cg/cpu/emu/cpu.cfs_quota_us", "150000\n") // 1.5 vCPU for the whole emulator
	put("cg/cpu/emu/cpu.cfs_period_us", "100000\n")
	put("cg/cpu/emu/sb/cpu.cfs_quota_us", "5800\n") // 0.29 for the sandbox
	put("cg/cpu/emu/sb/cpu.cfs_period_us", "20000\n")
	put("cg/cpuacct/emu/sb/cpuacct.usage", "123456789\n")
	s, err := openSelf(r)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.CPULimit(); got < 0.289 || got > 0.291 {
		t.Errorf("CPULimit = %v, want 0.29", got)
	}
	if got, _ := s.CPUUsage(); got != 123456789 {
		t.Errorf("CPUUsage = %v, want 123456789ns", got)
	}
	put("cg/cpuacct/emu/sb/cpuacct.usage", "223456789\n")
	if got, _ := s.CPUUsage(); got != 223456789 {
		t.Errorf("CPUUsage after a change = %v, want 223456789ns (read again, not cached)", got)
	}
}

// newTestManager is a real manager under this process's cgroups. These
// tests need Linux and root, as the Lambda emulator does to limit
// sandboxes; this project's machines and CI have both.
func newTestManager(t *testing.T) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroup limits need root; the emulator runs unlimited without it")
	}
	m, err := NewManager(fmt.Sprintf("ferry-test-%d", os.Getpid()))
	if err != nil {
		t.Fatalf("root on Linux, yet no cgroups to write: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// runIn starts the test binary with env inside g, and returns its output
// and exit error.
func runIn(t *testing.T, g *Group, env ...string) (string, error) {
	t.Helper()
	var out strings.Builder
	cmd := startIn(t, g, "", &out, env...)
	err := cmd.Wait()
	return strings.TrimSpace(out.String()), err
}

// startIn starts the test binary with env inside g, held to the CPUs of
// cpuList (taskset's list form) unless it is empty, its output to out.
func startIn(t *testing.T, g *Group, cpuList string, out io.Writer, env ...string) *exec.Cmd {
	t.Helper()
	// Gate the child until it is in the group: a shell that waits on a
	// pipe, as the emulator starts sandboxes.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	script := `read -r _ <&3 && exec 3<&- && exec "$0"`
	if cpuList != "" {
		script = `read -r _ <&3 && exec 3<&- && exec taskset -c "$1" "$0"`
	}
	cmd := exec.Command("/bin/sh", "-c", script, self, cpuList)
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = []*os.File{r}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	w.Write([]byte("go\n"))
	w.Close()
	return cmd
}

func TestCPUQuota(t *testing.T) {
	m := newTestManager(t)
	tests := map[string]struct {
		memoryMB, threads int
		minWallMs         int64 // what the quota must at least make the burn take
	}{
		// 884 MB is half a vCPU: 100 ms of CPU takes about 200 ms.
		"884 MB, one 100 ms burn": {884, 1, 180},
		// 1769 MB is one vCPU: two 100 ms burns at once take about 200 ms.
		"1769 MB, two 100 ms burns at once": {1769, 2, 180},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			g, err := m.New(strings.ReplaceAll(strings.ReplaceAll(name, " ", "-"), ",", ""), Limits{CPU: LambdaCPU(tt.memoryMB)})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Remove()
			out, err := runIn(t, g, "CGROUP_TEST_BURN=100", fmt.Sprintf("CGROUP_TEST_THREADS=%d", tt.threads))
			if err != nil {
				t.Fatalf("burn: %v (%s)", err, out)
			}
			wall, _ := strconv.ParseInt(out, 10, 64)
			if wall < tt.minWallMs {
				t.Errorf("%d ms of CPU took %d ms of wall time, want at least %d: the quota does not hold", 100*tt.threads, wall, tt.minWallMs)
			}
			used, err := g.CPUUsage()
			if err != nil {
				t.Fatal(err)
			}
			if want := time.Duration(tt.threads) * 100 * time.Millisecond; used < want {
				t.Errorf("group CPU usage %v, want at least %v", used, want)
			}
			// The quota is what the kernel was given. Whether it had to
			// throttle depends on what else ran: two burns on a machine
			// whose other core is busy never exceed one vCPU, so
			// throttling is logged, not required.
			if got, want := quotaOf(t, g), LambdaCPU(tt.memoryMB); math.Abs(got-want) > 0.01 {
				t.Errorf("the group's CPU quota is %.3f vCPU, want %.3f", got, want)
			}
			n, total, err := g.Throttled()
			if err != nil {
				t.Error(err)
			}
			t.Logf("burn took %d ms of wall time; throttled %d periods, %v", wall, n, total)
		})
	}
}

func TestMemoryLimitKills(t *testing.T) {
	m := newTestManager(t)
	g, err := m.New("oom", Limits{MemoryBytes: 128 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	out, err := runIn(t, g, "CGROUP_TEST_ALLOC=400")
	if err == nil {
		t.Fatalf("allocating 400 MiB under a 128 MiB limit succeeded (%s)", out)
	}
	if n, err := g.OOMKills(); err != nil || n < 1 {
		t.Errorf("OOMKills = %d (%v), want at least 1", n, err)
	}
	if peak, _ := g.MemoryPeak(); peak < 100<<20 || peak > 129<<20 {
		t.Errorf("MemoryPeak = %d MiB, want about the 128 MiB limit", peak>>20)
	}
}

func TestFreezeThawKill(t *testing.T) {
	m := newTestManager(t)
	g, err := m.New("freeze", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	cmd, exited := sleepIn(t, g)
	if got := g.Procs(); len(got) != 1 || got[0] != cmd.Process.Pid {
		t.Fatalf("Procs = %v, want [%d]", got, cmd.Process.Pid)
	}
	if err := g.Freeze(); err != nil {
		t.Fatal(err)
	}
	state := func() byte {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
			return s[i+2]
		}
		return 0
	}
	// A frozen task sleeps uninterruptibly (D) in v1, or is stopped in v2's
	// freezer; either way it is no longer in its ordinary sleep (S).
	for deadline := time.Now().Add(5 * time.Second); state() == 'S'; {
		if time.Now().After(deadline) {
			t.Fatalf("still sleeping normally after Freeze")
		}
		runtime.Gosched()
	}
	if err := g.Thaw(); err != nil {
		t.Fatal(err)
	}
	g.Freeze()
	g.Kill() // a frozen group must still die
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("a frozen process did not die on Kill")
	}
}

// TestReapSiblings: a manager whose process died without Close leaves a
// frozen process behind, which no SIGKILL ends while it stays frozen; the
// next manager finds it, kills it and removes its groups. Groups of live
// managers are left alone.
func TestReapSiblings(t *testing.T) {
	m := newTestManager(t)
	orphan, err := NewManager(fmt.Sprintf("ferry-test-orphan-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	g, err := orphan.New("sandbox", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cmd, exited := sleepIn(t, g)
	if err := g.Freeze(); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	cmd.Process.Kill() // pending until thawed
	select {
	case <-exited:
		t.Fatal("a frozen process died on SIGKILL while frozen: this kernel needs no reaping, and the test cannot show it")
	case <-time.After(100 * time.Millisecond):
	}

	if n := m.ReapSiblings(func(name string) bool { return name == fmt.Sprintf("ferry-test-other-%d", os.Getpid()) }); n != 0 {
		t.Errorf("ReapSiblings reaped %d groups that stale did not name", n)
	}
	if n := m.ReapSiblings(func(name string) bool { return name == fmt.Sprintf("ferry-test-orphan-%d", os.Getpid()) }); n == 0 {
		t.Error("ReapSiblings reaped nothing")
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		g.Thaw()
		t.Fatal("the orphan's frozen process still runs after ReapSiblings")
	}
	for _, d := range orphan.parents {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still there after ReapSiblings (%v)", d, err)
		}
	}
	for _, d := range m.parents {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("the reaping manager's own %s is gone: %v", d, err)
		}
	}
}

// quotaOf reads back the group's CPU quota in vCPUs.
func quotaOf(t *testing.T, g *Group) float64 {
	t.Helper()
	d := g.dirs[ctlCPU]
	if g.m.v2 {
		b, err := os.ReadFile(filepath.Join(d, "cpu.max"))
		if err != nil {
			t.Fatal(err)
		}
		var q, p float64
		if _, err := fmt.Sscanf(string(b), "%f %f", &q, &p); err != nil || p == 0 {
			t.Fatalf("cpu.max %q: %v", b, err)
		}
		return q / p
	}
	q, err := readInt(filepath.Join(d, "cpu.cfs_quota_us"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := readInt(filepath.Join(d, "cpu.cfs_period_us"))
	if err != nil || p == 0 {
		t.Fatalf("cpu.cfs_period_us: %d, %v", p, err)
	}
	return float64(q) / float64(p)
}

// sleepIn starts a long sleep in g; exited receives its end.
func sleepIn(t *testing.T, g *Group) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	return cmd, exited
}

// TestContendedSince: what counts as waiting for cores others held, on
// samples made by hand.
func TestContendedSince(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	at := time.Unix(1000, 0)
	sample := func(wall, cpu, throttled time.Duration, threads map[int]threadStat) Sample {
		return Sample{At: at.Add(wall), CPU: cpu, Throttled: throttled, threads: map[int]map[int]threadStat{1: threads}}
	}
	zero := Sample{At: at, threads: map[int]map[int]threadStat{1: {}}}
	tests := map[string]struct {
		earlier, later Sample
		cpus           float64
		want           time.Duration
	}{
		"a burn that waited for others": {zero, sample(ms(200), ms(100), 0, map[int]threadStat{10: {ms(100), ms(80)}}), 1, ms(80)},
		// It waited as long as its sibling computed: its own vCPU would
		// have made it wait as much.
		"a thread that waited behind its sibling": {zero, sample(ms(1000), ms(110), 0,
			map[int]threadStat{10: {ms(30), ms(80)}, 11: {ms(80), 0}}), 1, 0},
		"the group's own quota held it": {zero, sample(ms(300), ms(100), ms(90), map[int]threadStat{10: {ms(100), ms(100)}}), 1, ms(10)},
		"helper threads' waits do not add up": {zero, sample(ms(300), ms(100), 0,
			map[int]threadStat{10: {ms(99), ms(60)}, 11: {ms(1), ms(50)}, 12: {0, ms(50)}}), 1, ms(59)},
		"never more than the wall time less the CPU at its share": {zero, sample(ms(150), ms(50), 0,
			map[int]threadStat{10: {ms(50), ms(90)}}), 0.5, ms(50)},
		"a reused thread id is not the thread sampled before": {
			Sample{At: at, threads: map[int]map[int]threadStat{1: {10: {ms(500), ms(400)}}}},
			sample(ms(200), ms(100), 0, map[int]threadStat{10: {ms(100), ms(80)}}), 1, 0},
		"counted from the earlier sample": {
			Sample{At: at, CPU: ms(1000), threads: map[int]map[int]threadStat{1: {10: {ms(1000), ms(400)}}}},
			Sample{At: at.Add(ms(200)), CPU: ms(1100), threads: map[int]map[int]threadStat{1: {10: {ms(1100), ms(480)}}}}, 1, ms(80)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tt.later.ContendedSince(tt.earlier, tt.cpus); got != tt.want {
				t.Errorf("ContendedSince = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestContention: a burn that shares its core with a process outside its
// group waits for it, and the group's sample finds that wait.
func TestContention(t *testing.T) {
	m := newTestManager(t)
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset to put two processes on one core")
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	core := -1
	for c := range 1024 {
		if set.IsSet(c) {
			core = c
			break
		}
	}
	g, err := m.New("contention", Limits{CPU: LambdaCPU(1769)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	// A session of its own: with autogroup scheduling on, the rival would
	// otherwise weigh as this test's whole session.
	rival := exec.Command("taskset", "-c", strconv.Itoa(core), "/bin/sh", "-c", "while :; do :; done")
	rival.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := rival.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { rival.Process.Kill(); rival.Wait() }()
	before, err := g.Sample()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := startIn(t, g, strconv.Itoa(core), pw, "CGROUP_TEST_BURN=200", "CGROUP_TEST_THREADS=1", "CGROUP_TEST_HOLD=1")
	pw.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// The burn is over when it prints; its threads live on, so their
	// waits can be read.
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("burn: %v", err)
	}
	after, err := g.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Procs()) == 0 {
		t.Fatal("the burn exited before its threads were read")
	}
	wall, cpu := after.At.Sub(before.At), after.CPU-before.CPU
	c := after.ContendedSince(before, LambdaCPU(1769))
	t.Logf("burn took %s ms; sampled over %v: CPU %v, throttled %v, contended %v",
		strings.TrimSpace(line), wall, cpu, after.Throttled-before.Throttled, c)
	// The burn neither sleeps nor exceeds its quota: what of its wall time
	// it did not compute, it spent waiting for the core the rival held.
	// The estimate (which errs low) must find most of that.
	if notCPU := wall - cpu; notCPU < 20*time.Millisecond || c < notCPU/2 {
		t.Errorf("contended %v of the %v the burn did not compute (of %v), want at least half, of at least 20 ms", c, notCPU, wall)
	}
}
