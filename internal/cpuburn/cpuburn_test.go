package cpuburn

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBurnSpendsWhatItSays checks, on the thread's own CPU clock read
// around it, that a burn spends its target and barely more: the bench's
// workloads and their oracle assume requests cost exactly what they ask.
func TestBurnSpendsWhatItSays(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	clock := func() time.Duration {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ts.Nano())
	}
	const d = 20 * time.Millisecond
	for range 5 {
		before := clock()
		said := Burn(d)
		spent := clock() - before
		if said < d || spent < d {
			t.Fatalf("Burn(%v) said %v, spent %v: less than asked", d, said, spent)
		}
		if over := spent - d; over > d/40 {
			t.Fatalf("Burn(%v) spent %v: %v more than asked", d, spent, over)
		}
	}
}
