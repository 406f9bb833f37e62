package ferrycdk

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
)

// Context keys the app reads (cdk -c key=value, or cdk.json).
const (
	CtxRegions        = "regions"        // comma-separated; default us-east-1
	CtxVpcID          = "vpcId"          // use an existing VPC
	CtxNatGateways    = "natGateways"    // in a new VPC; default 1
	CtxCertificateArn = "certificateArn" // HTTPS at the ALB: an ACM certificate ARN for each region, comma-separated
	CtxRouterTasks    = "routerTasks"    // desired router tasks; default 2
	CtxArtifactsDir   = "artifactsDir"   // make layer's output; default: built at synth from the source
	CtxRouterImage    = "routerImage"    // a built router image; default: build router/Dockerfile
	CtxSampleArch     = "sampleArch"     // the sample function's architecture: arm64 (default) or x86_64
	CtxTunnel         = "tunnel"         // private (default): functions in the VPC; public: functions anywhere
	CtxGlobal         = "global"         // accelerator: a Ferry-global stack in front of the regions; default none
)

// NewRegionStacks adds one FerryStack per region in the app's context,
// named Ferry-<region>, and with -c global=accelerator a GlobalStack in
// front of them, Ferry-global. repoRoot locates router/Dockerfile and dist/.
func NewRegionStacks(app awscdk.App, repoRoot string) ([]*FerryStack, error) {
	ctx := func(k string) string {
		if v, ok := app.Node().TryGetContext(str(k)).(string); ok {
			return strings.TrimSpace(v)
		}
		return ""
	}
	atoi := func(k string) (int, error) {
		v := ctx(k)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("context %s=%q: want a non-negative integer", k, v)
		}
		return n, nil
	}
	nat, err := atoi(CtxNatGateways)
	if err != nil {
		return nil, err
	}
	tasks, err := atoi(CtxRouterTasks)
	if err != nil {
		return nil, err
	}
	regions := ctx(CtxRegions)
	if regions == "" {
		regions = "us-east-1"
	}
	artifacts := ctx(CtxArtifactsDir)
	var arch awslambda.Architecture
	switch a := ctx(CtxSampleArch); a {
	case "", "arm64":
		arch = awslambda.Architecture_ARM_64()
	case "x86_64":
		arch = awslambda.Architecture_X86_64()
	default:
		return nil, fmt.Errorf("context %s=%q: want arm64 or x86_64", CtxSampleArch, a)
	}
	var public bool
	switch t := ctx(CtxTunnel); t {
	case "", "private":
	case "public":
		public = true
	default:
		return nil, fmt.Errorf("context %s=%q: want private or public", CtxTunnel, t)
	}
	var global bool
	switch g := ctx(CtxGlobal); g {
	case "", "none":
	case "accelerator":
		global = true
	default:
		return nil, fmt.Errorf("context %s=%q: want accelerator (AWS Global Accelerator in front of the regions) or none", CtxGlobal, g)
	}
	// ACM certificates are regional: each region's ALB takes the one in
	// its region.
	certs := map[string]string{}
	for a := range strings.SplitSeq(ctx(CtxCertificateArn), ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		parts := strings.Split(a, ":")
		if len(parts) < 6 || parts[2] != "acm" || parts[3] == "" {
			return nil, fmt.Errorf("context %s: %q is not an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)", CtxCertificateArn, a)
		}
		if certs[parts[3]] != "" {
			return nil, fmt.Errorf("context %s names two certificates in %s", CtxCertificateArn, parts[3])
		}
		certs[parts[3]] = a
	}
	var names []string
	for r := range strings.SplitSeq(regions, ",") {
		if r = strings.TrimSpace(r); r != "" {
			names = append(names, r)
		}
	}
	for region := range certs {
		if !slices.Contains(names, region) {
			return nil, fmt.Errorf("context %s names a certificate in %s, which is not among the regions %v", CtxCertificateArn, region, names)
		}
	}
	for _, r := range names {
		if len(certs) > 0 && certs[r] == "" {
			return nil, fmt.Errorf("context %s names no certificate in %s: ACM certificates are regional, so give one for each region", CtxCertificateArn, r)
		}
	}
	// Routers fail over (go unready while Lambda refuses) only where
	// another region can take their traffic.
	failOver := global && len(names) > 1
	var stacks []*FerryStack
	for _, r := range names {
		env := accountEnv()
		env.Region = str(r)
		stacks = append(stacks, NewFerryStack(app, "Ferry-"+r, &FerryStackProps{
			StackProps: awscdk.StackProps{Env: env, Description: str("ferry: many requests per Lambda invocation (" + r + ")"),
				CrossRegionReferences: &global}, // the global stack reads each region's load balancer
			RepoRoot:           repoRoot,
			ArtifactsDir:       artifacts,
			VpcID:              ctx(CtxVpcID),
			NatGateways:        nat,
			CertificateArn:     certs[r],
			FailOver:           failOver,
			DesiredRouterTasks: tasks,
			RouterImage:        ctx(CtxRouterImage),
			SampleArch:         arch,
			PublicTunnel:       public,
		}))
	}
	if global {
		NewGlobalStack(app, "Ferry-global", &GlobalStackProps{StackProps: awscdk.StackProps{Env: accountEnv()},
			Regions: stacks, HTTPS: len(certs) > 0})
	}
	return stacks, nil
}

// accountEnv is a stack environment in the account cdk was given
// (CDK_DEFAULT_ACCOUNT), if any: the region is the caller's to set.
func accountEnv() *awscdk.Environment {
	env := &awscdk.Environment{}
	if acct := os.Getenv("CDK_DEFAULT_ACCOUNT"); acct != "" {
		env.Account = str(acct)
	}
	return env
}
