package proctree

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestSignalReachesForkedGrandchild(t *testing.T) {
	// dash forks the command instead of exec'ing it: sleep is a grandchild.
	sh := exec.Command("/bin/sh", "-c", "/bin/sleep 30; true")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	var kids []int
	for deadline := time.Now().Add(2 * time.Second); len(kids) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("sleep never appeared under sh")
		}
		kids = Descendants(sh.Process.Pid)
	}
	Signal(sh.Process.Pid, syscall.SIGKILL)
	sh.Wait()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if syscall.Kill(kids[0], 0) != nil || Status(kids[0], "State") == "Z (zombie)" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived", kids[0])
		}
	}
}
