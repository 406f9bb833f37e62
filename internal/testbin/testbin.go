// Package testbin builds the project's real binaries for tests that run
// them as processes: the bootstrap, the router, the sample apps.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ModuleRoot returns the repository root, found from this source file.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles each package (a path relative to the module root, such as
// "./bootstrap") into dir, named by its last path element, statically
// (CGO_ENABLED=0), as the layer ships it. It returns the binaries' paths in
// order. When the tests run under the race detector, ferry's own programs
// (see raced) are built with it too, so that their concurrency is checked
// where the tests drive it; the sample apps, whose CPU the tests measure,
// are not.
func Build(dir string, pkgs ...string) ([]string, error) {
	out := make([]string, len(pkgs))
	for i, pkg := range pkgs {
		bin := filepath.Join(dir, filepath.Base(pkg))
		args, env := []string{"build", "-trimpath", "-o", bin}, "CGO_ENABLED=0"
		if Race && raced(pkg) {
			args, env = append(args, "-race"), "CGO_ENABLED=1"
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), env)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, strings.TrimSpace(string(msg)))
		}
		out[i] = bin
	}
	return out, nil
}

// raced reports whether pkg is one of ferry's programs, built with the race
// detector when the tests run with it.
func raced(pkg string) bool {
	switch pkg {
	case "./bootstrap", "./router", "./localstack/cmd/lambda-emulator", "./examples/inprocess":
		return true
	}
	return false
}

// RaceLog returns the GORACE setting that makes a race-built binary write
// what it finds under dir (and nothing when the tests run without the race
// detector); RaceReports reads it back. A binary run by the tests (the
// router, the emulator, a bootstrap in a sandbox) is not the test binary:
// its races would otherwise go unseen in a log nobody reads.
func RaceLog(dir string) []string {
	if !Race {
		return nil
	}
	return []string{"GORACE=log_path=" + filepath.Join(dir, "race") + " exitcode=0"}
}

// RaceReports returns what race-built binaries wrote under dir (see
// RaceLog), or "".
func RaceReports(dir string) string {
	files, _ := filepath.Glob(filepath.Join(dir, "race.*"))
	var b strings.Builder
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil {
			b.Write(data)
		}
	}
	return b.String()
}
