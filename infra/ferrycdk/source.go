package ferrycdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/constructs-go/constructs/v10"

	"github.com/ferryrun/ferry/layers/layerzip"
)

// modulePath is ferry's Go module.
const modulePath = "github.com/ferryrun/ferry"

// SourceDir is where ferry's module source is on this machine: the
// checkout when the CDK app is ferry's own or replaces the module with
// one, the module cache when the app imports ferry with go get. The
// constructs build the layer and the router image from it, so an app
// needs no ferry checkout.
func SourceDir() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", modulePath).Output()
	if dir := strings.TrimSpace(string(out)); err == nil && isModuleRoot(dir) {
		return dir, nil
	}
	// Not resolvable from the working directory (an app run from
	// elsewhere): this file's own place, where the build kept it.
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if dir := filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")); isModuleRoot(dir) {
			return dir, nil
		}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return "", fmt.Errorf("ferry's source (module %s) not found: run the CDK app from its Go module, which requires %s (%v)", modulePath, modulePath, err)
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	return err == nil && strings.Contains(string(b), "module "+modulePath+"\n")
}

// builtArtifacts builds ferry's zips from SourceDir into the CDK app's
// output directory, in a folder of scope's own, and returns it: the layer
// zips, and with samples the sample app's. The builds are reproducible (an
// unchanged source gives the same assets, and cdk deploy then publishes
// nothing new) and Go's build cache makes a repeat fast.
func builtArtifacts(scope constructs.Construct, samples bool) string {
	src, err := SourceDir()
	if err == nil {
		dir := filepath.Join(*awscdk.Stage_Of(scope).Outdir(), "ferry-build-"+*awscdk.Names_UniqueId(scope))
		build := layerzip.BuildLayers
		if samples {
			build = layerzip.Build
		}
		if _, err = build(context.Background(), src, dir); err == nil {
			return dir
		}
	}
	panic(fmt.Sprintf("ferry: building the layer at synth: %v", err))
}
