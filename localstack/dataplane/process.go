package dataplane

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/proctree"
)

// Stop ends the processes Start recorded in dir (each with its whole
// process group: the emulator's sandboxes and their apps go too) and
// removes their pid files. Stopping what is not running is no error.
func Stop(dir string) error {
	var errs []error
	// The router first: it drains its tunnels while the emulator lives.
	for _, p := range []string{routerPid, emulatorPid} {
		path := filepath.Join(dir, p)
		pid, ok := running(path)
		if ok {
			syscall.Kill(-pid, syscall.SIGTERM)
			deadline := time.Now().Add(15 * time.Second)
			for proctree.Alive(pid) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if proctree.Alive(pid) {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	os.Remove(filepath.Join(dir, stateFile))
	return errors.Join(errs...)
}

// spawn starts bin detached in its own process group, logging to
// StateDir/<name>.log, and records its pid.
func spawn(dir, pidFile string, env []string, bin string, args ...string) error {
	name := filepath.Base(bin)
	logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	go cmd.Wait() // reaped if this process outlives it (tests)
	return os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

// running reports the pid recorded in path, if that process still runs.
func running(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, proctree.Alive(pid)
}
