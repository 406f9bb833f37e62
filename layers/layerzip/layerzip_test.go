package layerzip

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ferryrun/ferry/internal/testbin"
)

func TestBuildIsReproducibleAndLaidOutForLambda(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	arts, err := Build(context.Background(), testbin.ModuleRoot(), a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), testbin.ModuleRoot(), b); err != nil {
		t.Fatal(err)
	}
	for _, art := range arts {
		x, _ := os.ReadFile(art.Path)
		y, _ := os.ReadFile(filepath.Join(b, filepath.Base(art.Path)))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds", filepath.Base(art.Path))
		}
	}
	for _, arch := range Arches {
		zr, err := zip.OpenReader(LayerZip(a, arch))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range zr.File {
			names = append(names, f.Name)
			if f.Mode()&0o111 == 0 && f.Name != "ferry-version" {
				t.Errorf("%s: %s is not executable", arch.Lambda, f.Name)
			}
			if f.Name == "bootstrap" && arch.GOARCH == runtime.GOARCH {
				// The bootstrap says the version the layer names.
				bin := filepath.Join(t.TempDir(), "bootstrap")
				rc, _ := f.Open()
				b, _ := io.ReadAll(rc)
				rc.Close()
				os.WriteFile(bin, b, 0o755)
				out, err := exec.Command(bin, "--version").Output()
				if want := Version(context.Background(), testbin.ModuleRoot()); err != nil || !strings.Contains(string(out), " "+want+" ") {
					t.Errorf("bootstrap --version: %q, %v; want it to name %s", out, err, want)
				}
			}
			if f.Name == "ferry-version" {
				rc, _ := f.Open()
				v, _ := io.ReadAll(rc)
				rc.Close()
				if want := Version(context.Background(), testbin.ModuleRoot()) + "\n"; string(v) != want {
					t.Errorf("%s: ferry-version is %q; want %q, what git describe says of the checkout", arch.Lambda, v, want)
				}
			}
		}
		zr.Close()
		if !slices.Equal(names, []string{"bootstrap", "ferry-exec-wrapper", "ferry-version"}) {
			t.Errorf("%s layer entries = %v, want [bootstrap ferry-exec-wrapper ferry-version] at the root", arch.Lambda, names)
		}
	}
}
