package layerzip

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"path/filepath"
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
			if f.Mode()&0o111 == 0 {
				t.Errorf("%s: %s is not executable", arch.Lambda, f.Name)
			}
		}
		zr.Close()
		if len(names) != 2 || names[0] != "bootstrap" || names[1] != "ferry-exec-wrapper" {
			t.Errorf("%s layer entries = %v, want [bootstrap ferry-exec-wrapper] at the root", arch.Lambda, names)
		}
	}
}
