// Command cdk-app is a CDK app of your own that puts one of its functions
// behind ferry with ferry's constructs, imported as a Go module: no ferry
// checkout and no make layer (the layer is built at synth from the
// module's source, the router image from its Dockerfile).
//
//	cdk synth     # or: go run .
//	cdk deploy    # needs Docker for the router image, or ROUTER_IMAGE=<uri>
//
// Its go.mod replaces the module with this repository; yours requires a
// release of github.com/ferryrun/ferry instead.
package main

import (
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/ferryrun/ferry/infra/ferrycdk"
)

func main() {
	defer jsii.Close()
	app := awscdk.NewApp(nil)
	NewAPIStack(app, "MyApi", &awscdk.StackProps{Env: &awscdk.Environment{Region: jsii.String("us-east-1")}})
	app.Synth(nil)
}

// NewAPIStack is your stack: your function, as it was, and ferry in front
// of it.
func NewAPIStack(scope constructs.Construct, id string, props *awscdk.StackProps) awscdk.Stack {
	stack := awscdk.NewStack(scope, jsii.String(id), props)

	// Ferry's router: a VPC, the tunnel endpoint its functions dial, the
	// layer (built now, from ferry's module source) and the router tasks.
	vpc := ferrycdk.NewNetwork(stack, "Vpc", &ferrycdk.NetworkProps{NatGateways: 1})
	tunnel := ferrycdk.NewTunnelEndpoint(stack, "Tunnel", &ferrycdk.TunnelEndpointProps{Vpc: vpc})
	layer := ferrycdk.NewFerryLayer(stack, "FerryLayer", nil)
	router := ferrycdk.NewRouterService(stack, "Router", &ferrycdk.RouterServiceProps{
		Vpc: vpc, Tunnel: tunnel, Image: os.Getenv("ROUTER_IMAGE"),
	})

	// Your function: a Python web server (app/server.py, started by
	// app/run.sh), in the VPC's private subnets, with its own settings.
	api := awslambda.NewFunction(stack, jsii.String("Api"), &awslambda.FunctionProps{
		Runtime: awslambda.Runtime_PYTHON_3_13(), Handler: jsii.String("run.sh"),
		Code: awslambda.Code_FromAsset(jsii.String("app"), nil), Architecture: awslambda.Architecture_ARM_64(),
		MemorySize: jsii.Number(1769), Timeout: awscdk.Duration_Seconds(jsii.Number(60)),
		Vpc: vpc, VpcSubnets: &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS},
		Environment: &map[string]*string{"GREETING": jsii.String("hello")},
	})

	// Ferry in front of it: its requests for api.example.com share
	// invocations from now on.
	router.Attach(api, &ferrycdk.AttachOptions{
		Layer: layer, Host: "api.example.com",
		Environment: map[string]string{"FERRY_READINESS_PATH": "/healthz"},
	})
	awscdk.NewCfnOutput(stack, jsii.String("ClientUrl"), &awscdk.CfnOutputProps{Value: jsii.String(router.URL)})
	return stack
}
