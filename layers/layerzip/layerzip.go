// Package layerzip builds ferry's Lambda artifacts reproducibly: the layer
// zip per architecture (bootstrap at the root, which Lambda mounts as
// /opt/bootstrap, the exec wrapper, and ferry-version, the build's version)
// and the sample function's code zip.
// The same source gives byte-identical zips: fixed timestamps, sorted
// entries, -trimpath builds with no build id.
package layerzip

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Arch is a Lambda architecture and its Go name.
type Arch struct {
	Lambda string // "arm64" or "x86_64"
	GOARCH string
}

// Arches are the architectures ferry ships.
var Arches = []Arch{{"arm64", "arm64"}, {"x86_64", "amd64"}}

// epoch is every entry's timestamp (zip's earliest representable date).
var epoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Artifact is one built zip.
type Artifact struct {
	Path string
	Size int64
}

// LayerZip names the layer zip for an architecture.
func LayerZip(dir string, a Arch) string {
	return filepath.Join(dir, "ferry-layer-"+a.Lambda+".zip")
}

// SampleZip names the sample function's code zip for an architecture.
func SampleZip(dir string, a Arch) string {
	return filepath.Join(dir, "sample-app-"+a.Lambda+".zip")
}

// Build writes the layer zip and the sample app zip for each architecture
// into outDir. root is the module root.
func Build(ctx context.Context, root, outDir string) ([]Artifact, error) {
	version := Version(ctx, root)
	out, err := buildLayers(ctx, root, outDir, version)
	if err != nil {
		return nil, err
	}
	for _, a := range Arches {
		app, err := goBuild(ctx, root, "./examples/goapp", a.GOARCH, version)
		if err != nil {
			return nil, err
		}
		art, err := writeZip(SampleZip(outDir, a), map[string]entry{
			"goapp":  {app, 0o755},
			"run.sh": {[]byte("#!/bin/sh\nexec \"$LAMBDA_TASK_ROOT/goapp\"\n"), 0o755},
		})
		if err != nil {
			return nil, err
		}
		out = append(out, art)
	}
	return out, nil
}

// BuildLayers writes the layer zip for each architecture into outDir.
func BuildLayers(ctx context.Context, root, outDir string) ([]Artifact, error) {
	return buildLayers(ctx, root, outDir, Version(ctx, root))
}

func buildLayers(ctx context.Context, root, outDir, version string) ([]Artifact, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	wrapper, err := os.ReadFile(filepath.Join(root, "bootstrap", "wrapper", "ferry-exec-wrapper"))
	if err != nil {
		return nil, err
	}
	var out []Artifact
	for _, a := range Arches {
		boot, err := goBuild(ctx, root, "./bootstrap", a.GOARCH, version)
		if err != nil {
			return nil, err
		}
		art, err := writeZip(LayerZip(outDir, a), map[string]entry{
			"bootstrap":          {boot, 0o755},
			"ferry-exec-wrapper": {wrapper, 0o755},
			"ferry-version":      {[]byte(version + "\n"), 0o644},
		})
		if err != nil {
			return nil, err
		}
		out = append(out, art)
	}
	return out, nil
}

type entry struct {
	data []byte
	mode os.FileMode
}

// Version names the source being built: what git describe says of root
// where root is a git checkout's top (a tag or the commit, "-dirty" with
// uncommitted changes), the module version where root is the module
// cache's copy (…/ferry@v1.2.3), else "devel". The binaries report it
// (--version), and the layer carries it as /opt/ferry-version.
func Version(ctx context.Context, root string) string {
	if _, v, ok := strings.Cut(filepath.Base(root), "@"); ok && v != "" {
		return v
	}
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	top, _ := filepath.EvalSymlinks(git("rev-parse", "--show-toplevel"))
	here, _ := filepath.EvalSymlinks(root)
	if top == "" || top != here {
		return "devel" // not a checkout of its own, or inside someone else's
	}
	if v := git("describe", "--tags", "--always", "--dirty"); v != "" {
		return v
	}
	return "devel"
}

func goBuild(ctx context.Context, root, pkg, goarch, version string) ([]byte, error) {
	tmp, err := os.CreateTemp("", "ferry-build-")
	if err != nil {
		return nil, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid= -X github.com/ferryrun/ferry/internal/version.stamp="+version, "-o", tmp.Name(), pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s for %s: %v\n%s", pkg, goarch, err, msg)
	}
	return os.ReadFile(tmp.Name())
}

func writeZip(path string, entries map[string]entry) (Artifact, error) {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		h := &zip.FileHeader{Name: n, Method: zip.Deflate, Modified: epoch}
		h.SetMode(entries[n].mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return Artifact{}, err
		}
		if _, err := w.Write(entries[n].data); err != nil {
			return Artifact{}, err
		}
	}
	if err := zw.Close(); err != nil {
		return Artifact{}, err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return Artifact{}, err
	}
	return Artifact{Path: path, Size: int64(buf.Len())}, nil
}
