// Command infra is ferry's CDK app: `cdk deploy --all` from the repository
// root deploys one Ferry-<region> stack per region in the "regions" context
// (see infra/ferrycdk/app.go for every context key). The layer and the
// sample app are built at synth, unless -c artifactsDir names make layer's.
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/ferryrun/ferry/infra/ferrycdk"
)

func main() {
	defer jsii.Close()
	app := awscdk.NewApp(nil)
	if _, err := ferrycdk.NewRegionStacks(app, "."); err != nil {
		fmt.Fprintln(os.Stderr, "infra:", err)
		os.Exit(1)
	}
	app.Synth(nil)
}
