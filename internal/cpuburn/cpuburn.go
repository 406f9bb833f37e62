// Package cpuburn spends CPU time on purpose, for the sample apps, test
// functions and tests that need a request of known CPU cost.
package cpuburn

import (
	"crypto/sha256"
	"runtime"
	"syscall"
	"time"
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
		for range 200 {
			sum = sha256.Sum256(sum[:])
		}
		if used := threadCPU() - start; used >= d {
			return used
		}
	}
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
