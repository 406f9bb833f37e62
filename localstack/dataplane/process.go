package dataplane

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ferryrun/ferry/internal/proctree"
	"github.com/ferryrun/ferry/localstack/localrun"
)

// Stop ends the processes Start recorded in dir (each with its whole
// process group: the emulator's sandboxes and their apps go too) and
// removes their pid files. Stopping what is not running is no error.
func Stop(dir string) error {
	var errs []error
	// The router first: it drains its tunnels while the emulator lives.
	for _, p := range []string{routerPid, emulatorPid} {
		path := filepath.Join(dir, p)
		if pid, ok := running(path); ok {
			localrun.Stop(pid) // with its process group: sandboxes and apps too
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	os.Remove(filepath.Join(dir, stateFile))
	return errors.Join(errs...)
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
