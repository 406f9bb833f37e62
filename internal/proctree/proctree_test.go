package proctree

import (
	"os"
	"os/exec"
	"strings"
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

func TestAlive(t *testing.T) {
	running := exec.Command("sleep", "30")
	exited := exec.Command("true")
	for _, c := range []*exec.Cmd{running, exited} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { running.Process.Kill(); running.Wait(); exited.Wait() }()
	// exited is a zombie until Wait reaps it.
	for deadline := time.Now().Add(2 * time.Second); !strings.HasPrefix(Status(exited.Process.Pid, "State"), "Z"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("child did not exit: %s", Status(exited.Process.Pid, "State"))
		}
	}
	for _, tc := range []struct {
		name string
		pid  int
		want bool
	}{
		{"running", running.Process.Pid, true},
		{"zombie", exited.Process.Pid, false},
		{"missing", 1 << 30, false},
	} {
		if got := Alive(tc.pid); got != tc.want {
			t.Errorf("Alive(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestStarted: a process's start time is read past a command name holding
// spaces and parentheses, stays what it was, and is no earlier than its
// parent's; a pid with no process has none.
func TestStarted(t *testing.T) {
	dir := t.TempDir()
	odd := dir + "/a) b (c"
	if err := os.Symlink("/bin/sleep", odd); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(odd, "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	self, ok := Started(os.Getpid())
	if !ok || self == 0 {
		t.Fatalf("Started(self) = %d, %v", self, ok)
	}
	got, ok := Started(child.Process.Pid)
	if !ok || got < self {
		t.Fatalf("Started(child named %q) = %d, %v; want at least its parent's %d", Status(child.Process.Pid, "Name"), got, ok, self)
	}
	if again, _ := Started(child.Process.Pid); again != got {
		t.Errorf("Started(child) = %d, then %d", got, again)
	}
	if _, ok := Started(1 << 30); ok {
		t.Error("Started(a pid with no process) succeeded")
	}
}
