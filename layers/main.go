// Command layers builds ferry's Lambda artifacts into a directory (default
// dist/): ferry-layer-{arm64,x86_64}.zip and sample-app-{arm64,x86_64}.zip,
// reproducibly, and prints their sizes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/ferryrun/ferry/layers/layerzip"
)

func main() {
	out := flag.String("out", "dist", "output directory")
	flag.Parse()
	root, err := os.Getwd()
	if err == nil {
		var arts []layerzip.Artifact
		if arts, err = layerzip.Build(context.Background(), root, *out); err == nil {
			for _, a := range arts {
				fmt.Printf("%-36s %8.2f MB\n", a.Path, float64(a.Size)/(1<<20))
			}
			return
		}
	}
	fmt.Fprintln(os.Stderr, "layers:", err)
	os.Exit(1)
}
