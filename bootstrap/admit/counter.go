package admit

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/cgroup"
	"github.com/ferryrun/ferry/internal/proctree"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux that Lambda runs.
const clockTicks = 100

// SandboxCounter reads the CPU of the cgroup this process runs in: in a
// sandbox, everything in it, at nanosecond resolution. It returns the
// counter, the cgroup's CPU quota in vCPUs (0 when none), and a close
// function; it fails where no cgroup accounting is visible.
func SandboxCounter() (Counter, float64, func() error, error) {
	s, err := cgroup.OpenSelf()
	if err != nil {
		return nil, 0, nil, err
	}
	return func() time.Duration {
		d, _ := s.CPUUsage()
		return d
	}, s.CPULimit(), s.Close, nil
}

// ProcessCounter reads the CPU of this process and of the process trees
// rooted at pids(), at the kernel's tick (10 ms): the fallback where no
// cgroup is visible.
func ProcessCounter(pids func() []int) Counter {
	return func() time.Duration {
		total := selfCPU()
		if pids != nil {
			for _, pid := range pids() {
				total += procCPU(pid)
				for _, c := range proctree.Descendants(pid) {
					total += procCPU(c)
				}
			}
		}
		return total
	}
}

// OwnCounter reads the CPU this process (the bootstrap) has used: Config.Own.
func OwnCounter() time.Duration { return selfCPU() }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU reads utime+stime of one process from /proc/PID/stat.
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
