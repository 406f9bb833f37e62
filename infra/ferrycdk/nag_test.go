package ferrycdk_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/ferryrun/ferry/infra/ferrycdk"
	"github.com/ferryrun/ferry/internal/testbin"
)

// TestAwsSolutionsNag applies cdk-nag's AwsSolutions pack: no error may be
// left unsuppressed, and every suppression carries a written reason
// (cdk-nag itself rejects a reason under 10 characters).
func TestAwsSolutionsNag(t *testing.T) {
	for _, tunnel := range []string{"private", "public"} {
		t.Run(tunnel+" tunnel", func(t *testing.T) { awsSolutionsNag(t, map[string]any{ferrycdk.CtxTunnel: tunnel}) })
	}
	t.Run("two regions and the global stack", func(t *testing.T) {
		awsSolutionsNag(t, map[string]any{ferrycdk.CtxRegions: "us-east-1,eu-west-1", ferrycdk.CtxGlobal: "accelerator"})
	})
}

func awsSolutionsNag(t *testing.T, ctx map[string]any) {
	app := newApp(ctx)
	if _, err := ferrycdk.NewRegionStacks(app, testbin.ModuleRoot()); err != nil {
		t.Fatal(err)
	}
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	for _, c := range *app.Node().Children() {
		s, ok := c.(awscdk.Stack)
		if !ok {
			continue
		}
		errs := assertions.Annotations_FromStack(s).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*")))
		var lines []string
		for _, e := range *errs {
			lines = append(lines, fmt.Sprintf("%s: %v", *e.Id, strings.SplitN(fmt.Sprint(e.Entry.Data), "\n", 2)[0]))
		}
		sort.Strings(lines)
		for _, l := range lines {
			t.Errorf("unsuppressed: %s", l)
		}
	}
}
