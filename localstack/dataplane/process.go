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
		if pid, ok := running(path); ok { // the process recorded, not one that took its pid since
			localrun.Stop(pid) // with its process group: sandboxes and apps too
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	os.Remove(filepath.Join(dir, stateFile))
	return errors.Join(errs...)
}

// running reports the pid recorded in path, if that process still runs:
// the pid file's "pid start-time" (localrun.Plane), or a bare pid from an
// older one, whose process must then bear the file's name. A process that
// has since taken the pid of one that exited is not it: a stale pid file
// must not make a stop signal an unrelated process.
func running(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || len(f) > 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 || !proctree.Alive(pid) {
		return 0, false
	}
	if len(f) == 2 {
		want, err := strconv.ParseUint(f[1], 10, 64)
		got, ok := proctree.Started(pid)
		return pid, err == nil && ok && got == want
	}
	name := strings.TrimSuffix(filepath.Base(path), ".pid")
	return pid, proctree.Status(pid, "Name") == name[:min(len(name), 15)] // the kernel keeps 15 bytes of it
}
