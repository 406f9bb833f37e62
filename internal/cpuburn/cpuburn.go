// Package cpuburn spends CPU time on purpose, for the sample apps, test
// functions and tests that need a request of known CPU cost.
package cpuburn

import (
	"crypto/sha256"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Burn spins until the calling goroutine's thread has used d of CPU time
// (not wall time: a busy machine or a CPU quota must not shorten the burn)
// and returns the CPU time used.
func Burn(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPU()
	sum := sha256.Sum256(nil)
	for {
		for range 50 { // about 15 µs between reads
			sum = sha256.Sum256(sum[:])
		}
		if used := threadCPU() - start; used >= d {
			return used
		}
	}
}

// threadCPU is the calling thread's CPU time, to the ns. (getrusage's
// RUSAGE_THREAD lags by up to a scheduler tick: a burn judged by it ran
// about 0.9 ms past a 10 ms target, so the bench's "10 ms of CPU"
// requests cost 9% more than the oracle and ideal plain Lambda assume.)
// A raw system call: the clock never blocks, and the runtime's bookkeeping
// around an ordinary one (entersyscall, exitsyscall) made its other
// threads burn a tenth more CPU than the burn itself, which a sandbox's
// CPU quota counts. getrusage stays the fallback.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if _, _, errno := unix.RawSyscall(unix.SYS_CLOCK_GETTIME, unix.CLOCK_THREAD_CPUTIME_ID, uintptr(unsafe.Pointer(&ts)), 0); errno == 0 {
		return time.Duration(ts.Nano())
	}
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
