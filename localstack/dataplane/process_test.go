package dataplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ferryrun/ferry/internal/proctree"
)

// TestRunningKnowsItsProcess: a pid file names the process it recorded,
// not whatever has since taken its pid, so that a stop never signals an
// unrelated process (a stale pid once let a stop end a router another
// test had started on the reused pid).
func TestRunningKnowsItsProcess(t *testing.T) {
	sleep := exec.Command("sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	pid := sleep.Process.Pid
	started, ok := proctree.Started(pid)
	if !ok {
		t.Fatal("no start time for a running process")
	}
	tests := []struct {
		name, file, content string
		want                bool
	}{
		{"its pid and start time", "ferry-router.pid", fmt.Sprintf("%d %d\n", pid, started), true},
		{"another start time: the pid was reused", "ferry-router.pid", fmt.Sprintf("%d %d\n", pid, started+1), false},
		{"a bare pid of a process of its name", "sleep.pid", fmt.Sprintf("%d\n", pid), true},
		{"a bare pid of a process of another name", "ferry-router.pid", fmt.Sprintf("%d\n", pid), false},
		{"no such process", "ferry-router.pid", fmt.Sprintf("%d %d\n", 1<<30, started), false},
		{"garbage", "ferry-router.pid", "router\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, got := running(path); got != tt.want {
				t.Errorf("running(%q) = %v; want %v", tt.content, got, tt.want)
			}
		})
	}
}
