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
// (CGO_ENABLED=0) and without the race detector, as the layer ships it. It
// returns the binaries' paths in order.
func Build(dir string, pkgs ...string) ([]string, error) {
	out := make([]string, len(pkgs))
	for i, pkg := range pkgs {
		bin := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, strings.TrimSpace(string(msg)))
		}
		out[i] = bin
	}
	return out, nil
}
