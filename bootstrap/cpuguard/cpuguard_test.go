package cpuguard

import (
	"context"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// TestBusyRisesWithLoad runs a real CPU hog as a child process and checks the
// meter sees it, and that it sees an idle process as idle.
func TestBusyRisesWithLoad(t *testing.T) {
	idle := New(200*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go idle.Run(ctx)
	time.Sleep(300 * time.Millisecond)
	idleBusy := idle.Busy()
	if idleBusy > 0.5 {
		t.Errorf("idle process Busy() = %.2f, want near 0", idleBusy)
	}

	hogs := make([]*exec.Cmd, runtime.GOMAXPROCS(0))
	for i := range hogs {
		hogs[i] = exec.Command("/bin/sh", "-c", "while :; do :; done")
		if err := hogs[i].Start(); err != nil {
			t.Fatal(err)
		}
		defer hogs[i].Process.Kill()
	}
	busy := New(200*time.Millisecond, func() []int {
		pids := make([]int, len(hogs))
		for i, h := range hogs {
			pids[i] = h.Process.Pid
		}
		return pids
	})
	go busy.Run(ctx)
	time.Sleep(400 * time.Millisecond)
	// The machine is shared (make test runs packages side by side): the
	// hogs may get far less than their CPUs. Demand that the meter sees
	// them clearly, not how much they got.
	if b := busy.Busy(); b < 0.15 || b < 2*idleBusy {
		t.Errorf("with one hog per CPU, Busy() = %.2f, want over 0.15 and twice the idle %.2f", b, idleBusy)
	}
}

func TestProcCPUOfMissingProcessIsZero(t *testing.T) {
	if got := procCPU(1 << 30); got != 0 {
		t.Errorf("procCPU(missing) = %v, want 0", got)
	}
}
