package ferrycdk

import (
	"path/filepath"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/constructs-go/constructs/v10"

	"github.com/ferryrun/ferry/router/config"
)

// FerryStackProps configure NewFerryStack. The zero value deploys with the
// defaults documented on each field.
type FerryStackProps struct {
	awscdk.StackProps
	// RepoRoot is where router/Dockerfile lives. If empty, ferry's module
	// source (SourceDir).
	RepoRoot string
	// ArtifactsDir holds make layer's zips. If empty, they are built at
	// synth from ferry's module source.
	ArtifactsDir string
	// VpcID uses an existing VPC; NatGateways sizes a new one (default 1).
	VpcID       string
	NatGateways int
	// CertificateArn turns on HTTPS at the ALB.
	CertificateArn string
	// FailOver: a global entry point is in front of this region (see
	// RouterServiceProps.FailOver).
	FailOver bool
	// DesiredRouterTasks; if zero, 2.
	DesiredRouterTasks int
	// RouterImage is a built router image (a registry URI). If empty, cdk
	// deploy builds router/Dockerfile as an image asset.
	RouterImage string
	// SampleArch is the sample function's architecture; if nil, ARM64.
	SampleArch awslambda.Architecture
	// PublicTunnel opens the routers' tunnel port to the internet, so
	// functions need no VPC (TunnelEndpointProps.Public); the sample
	// function then runs outside the VPC.
	PublicTunnel bool
}

// FerryStack is one region's deployment.
type FerryStack struct {
	awscdk.Stack
	Layer         *FerryLayer
	Router        *RouterService
	Sample        *FerryFunction
	Observability *Observability
}

// NewFerryStack builds ferry in one region: network, tunnel endpoint,
// layer, the Go sample app as a ferry function, the router, and the
// dashboard with alarms.
func NewFerryStack(scope constructs.Construct, id string, props *FerryStackProps) *FerryStack {
	if props == nil {
		props = &FerryStackProps{}
	}
	stack := awscdk.NewStack(scope, str(id), &props.StackProps)
	artifacts := props.ArtifactsDir
	if artifacts == "" {
		artifacts = builtArtifacts(stack, true)
	}
	s := &FerryStack{Stack: stack}

	vpc := NewNetwork(stack, "Vpc", &NetworkProps{VpcID: props.VpcID, NatGateways: props.NatGateways})
	tunnel := NewTunnelEndpoint(stack, "TunnelEndpoint", &TunnelEndpointProps{Vpc: vpc, Public: props.PublicTunnel})
	s.Layer = NewFerryLayer(stack, "FerryLayer", &FerryLayerProps{ArtifactsDir: artifacts})
	arch := props.SampleArch
	if arch == nil {
		arch = awslambda.Architecture_ARM_64()
	}
	sample := &FerryFunctionProps{
		Code:   awslambda.Code_FromAsset(str(filepath.Join(artifacts, "sample-app-"+*arch.Name()+".zip")), nil),
		AppCmd: "$LAMBDA_TASK_ROOT/goapp", Layer: s.Layer, Architecture: arch,
		Environment: map[string]string{"FERRY_READINESS_PATH": "/healthz"},
	}
	if !props.PublicTunnel {
		sample.Vpc, sample.TunnelPeer = vpc, tunnel.SecurityGroup
	}
	s.Sample = NewFerryFunction(stack, "SampleApp", sample)
	s.Router = NewRouterService(stack, "Router", &RouterServiceProps{
		Vpc: vpc, Tunnel: tunnel, Functions: []*FerryFunction{s.Sample}, RepoRoot: props.RepoRoot,
		DesiredCount: props.DesiredRouterTasks, CertificateArn: props.CertificateArn, Image: props.RouterImage,
		FailOver: props.FailOver,
	})
	s.Observability = NewObservability(stack, "Dashboard", &ObservabilityProps{
		Router: s.Router, Functions: []*FerryFunction{s.Sample}, Name: "ferry-" + *stack.Region(),
	})

	awscdk.NewCfnOutput(stack, str("ClientUrl"), &awscdk.CfnOutputProps{Value: str(s.Router.URL), Description: str("send client traffic here")})
	awscdk.NewCfnOutput(stack, str("LayerArnArm64"), &awscdk.CfnOutputProps{Value: s.Layer.Arm64.LayerVersionArn()})
	awscdk.NewCfnOutput(stack, str("LayerArnX8664"), &awscdk.CfnOutputProps{Value: s.Layer.X8664.LayerVersionArn()})
	awscdk.NewCfnOutput(stack, str("DashboardUrl"), &awscdk.CfnOutputProps{Value: str(
		"https://" + *stack.Region() + ".console.aws.amazon.com/cloudwatch/home?region=" + *stack.Region() +
			"#dashboards:name=" + *s.Observability.Dashboard.DashboardName())})
	awscdk.NewCfnOutput(stack, str("SampleFunctionName"), &awscdk.CfnOutputProps{Value: s.Sample.Function.FunctionName()})
	s.exportForFunctions(vpc, tunnel)
	return s
}

// exportForFunctions publishes what a function deployed apart from this
// stack (SAM, another CDK app) needs to join it: exports named
// <stack>-VpcId, -PrivateSubnetIds (comma-separated), -TunnelSecurityGroupId,
// -RouterTaskRoleArn and -RoutesParameterName, which rarely change; and
// the layer ARNs as SSM parameters /ferry/<stack>/layer-arn/{arm64,x86_64},
// which change with every new layer version: CloudFormation refuses to
// change an export another stack imports, so an exported layer ARN would
// lock the layer.
func (s *FerryStack) exportForFunctions(vpc awsec2.IVpc, tunnel *TunnelEndpoint) {
	name := *s.Stack.StackName()
	export := func(id string, value *string, what string) {
		awscdk.NewCfnOutput(s.Stack, str(id), &awscdk.CfnOutputProps{Value: value, ExportName: str(name + "-" + id), Description: str(what)})
	}
	var subnets []*string
	for _, sn := range *vpc.SelectSubnets(&awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS}).SubnetIds {
		subnets = append(subnets, sn)
	}
	export("VpcId", vpc.VpcId(), "the VPC ferry's functions run in")
	export("PrivateSubnetIds", awscdk.Fn_Join(str(","), &subnets), "the subnets ferry's functions run in, comma-separated")
	export("TunnelSecurityGroupId", tunnel.SecurityGroup.SecurityGroupId(), "admit a function's group on the tunnel port here")
	export("RouterTaskRoleArn", s.Router.TaskRole.RoleArn(), "let this principal invoke a function (lambda add-permission)")
	export("RoutesParameterName", s.Router.RoutesParameter.ParameterName(), "routes beyond the stack's own: ferry routes list|add|remove")
	mode := "private"
	if tunnel.Public {
		mode = "public"
	}
	export("TunnelMode", str(mode), "public: functions dial back over the internet and need no VPC; private: from the VPC's private subnets")
	// Not exported: it changes with the stack's functions. ferry attach
	// reads it to refuse a route one of these already takes.
	awscdk.NewCfnOutput(s.Stack, str("StackRoutes"), &awscdk.CfnOutputProps{
		Value: awscdk.Lazy_String(&routesProducer{s.Router}, nil), Description: str("the stack's own routes (FERRY_ROUTER_ROUTES)")})
	for _, l := range []struct {
		arch  string
		layer awslambda.LayerVersion
	}{{"arm64", s.Layer.Arm64}, {"x86_64", s.Layer.X8664}} {
		awsssm.NewStringParameter(s.Stack, str("LayerArnParameter"+l.arch), &awsssm.StringParameterProps{
			ParameterName: str(config.LayerParameterName(name, l.arch)), StringValue: l.layer.LayerVersionArn(),
			Description: str("ferry's layer for " + l.arch + ": the current version, for functions deployed apart from the stack"),
		})
	}
}
