package ferrycdk

import (
	"fmt"
	"strconv"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
)

// FerryFunctionProps configure NewFerryFunction.
type FerryFunctionProps struct {
	Code awslambda.Code // required: your web server and what it needs
	// AppCmd starts your server (FERRY_APP_CMD). If empty, the bootstrap
	// runs $LAMBDA_TASK_ROOT/run.sh.
	AppCmd string
	// Runtime; if nil, provided.al2023. A managed runtime gets
	// AWS_LAMBDA_EXEC_WRAPPER=/opt/ferry-exec-wrapper.
	Runtime awslambda.Runtime
	// Handler, for managed runtimes: an executable script in Code. If
	// empty, "run.sh".
	Handler string
	// Architecture; if nil, ARM64.
	Architecture awslambda.Architecture
	Layer        *FerryLayer // required
	// Vpc is where the function reaches a private tunnel endpoint: its
	// private subnets. With Vpc and TunnelPeer both nil the function runs
	// outside any VPC, which only a public tunnel endpoint
	// (TunnelEndpointProps.Public) can take dial-backs from.
	Vpc awsec2.IVpc
	// TunnelPeer is the tunnel endpoint's security group; the function gets
	// egress to it on the tunnel port. Required with Vpc.
	TunnelPeer awsec2.ISecurityGroup
	// Host and PathPrefix route client requests to this function. With
	// both empty, the function takes every path ("/").
	Host, PathPrefix string
	MemoryMB         int             // if zero, 1769 (one full vCPU)
	Timeout          awscdk.Duration // if nil, 60s
	MaxConcurrency   int             // per invocation (FERRY_MAX_CONCURRENCY); if zero, 64 (a ceiling: CPU admission decides)
	Environment      map[string]string
	// URLAuth, if set, gives the function a Lambda Function URL with this
	// auth type: direct invocations, one request each, beside the router.
	URLAuth awslambda.FunctionUrlAuthType
	// StreamResponses makes that URL stream (InvokeMode RESPONSE_STREAM)
	// and the bootstrap answer direct invocations with the Runtime API's
	// streaming response (FERRY_INVOKE_MODE=response_stream).
	StreamResponses bool
}

// FerryFunction is a Lambda function served through ferry.
type FerryFunction struct {
	Function      awslambda.Function
	SecurityGroup awsec2.SecurityGroup  // nil outside a VPC
	URL           awslambda.FunctionUrl // nil without URLAuth
	host, prefix  string
}

// NewFerryFunction makes a function with ferry's layer and configuration,
// placed in the VPC's private subnets so it can dial the tunnel endpoint,
// or outside any VPC for a public one.
func NewFerryFunction(scope constructs.Construct, id string, p *FerryFunctionProps) *FerryFunction {
	if p.Code == nil || p.Layer == nil || (p.Vpc == nil) != (p.TunnelPeer == nil) {
		panic(fmt.Sprintf("FerryFunction %s: Code and Layer are required, and Vpc and TunnelPeer go together", id))
	}
	if p.StreamResponses && p.URLAuth == "" {
		panic(fmt.Sprintf("FerryFunction %s: StreamResponses is for a Function URL: set URLAuth too", id))
	}
	runtime := p.Runtime
	if runtime == nil {
		runtime = awslambda.Runtime_PROVIDED_AL2023()
	}
	arch := p.Architecture
	if arch == nil {
		arch = awslambda.Architecture_ARM_64()
	}
	handler := p.Handler
	if handler == "" {
		handler = "run.sh"
	}
	mem, timeout, conc := p.MemoryMB, p.Timeout, p.MaxConcurrency
	if mem == 0 {
		mem = 1769
	}
	if timeout == nil {
		timeout = awscdk.Duration_Seconds(num(60))
	}
	if conc == 0 {
		conc = 64
	}
	env := map[string]*string{"FERRY_MAX_CONCURRENCY": str(strconv.Itoa(conc))}
	if p.AppCmd != "" {
		env["FERRY_APP_CMD"] = str(p.AppCmd)
	}
	if *runtime.Name() != *awslambda.Runtime_PROVIDED_AL2023().Name() {
		env["AWS_LAMBDA_EXEC_WRAPPER"] = str("/opt/ferry-exec-wrapper")
	}
	if p.StreamResponses {
		env["FERRY_INVOKE_MODE"] = str("response_stream")
	}
	for k, v := range p.Environment {
		env[k] = str(v)
	}

	props := &awslambda.FunctionProps{
		Code: p.Code, Runtime: runtime, Handler: str(handler), Architecture: arch,
		Layers: &[]awslambda.ILayerVersion{p.Layer.For(arch)}, MemorySize: num(float64(mem)), Timeout: timeout,
		Environment: &env,
		LogGroup: awslogs.NewLogGroup(scope, str(id+"Logs"), &awslogs.LogGroupProps{
			Retention: awslogs.RetentionDays_ONE_MONTH, RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
		}),
		Description: str("served through ferry"),
	}
	var sg awsec2.SecurityGroup
	if p.Vpc != nil {
		sg = awsec2.NewSecurityGroup(scope, str(id+"Sg"), &awsec2.SecurityGroupProps{
			Vpc: p.Vpc, AllowAllOutbound: yes,
			Description: str("ferry function " + id + ": dials the router tunnel endpoint, plus the app egress"),
		})
		p.TunnelPeer.AddIngressRule(sg, awsec2.Port_Tcp(num(TunnelPort)), str("tunnels from "+id), nil)
		props.Vpc, props.SecurityGroups = p.Vpc, &[]awsec2.ISecurityGroup{sg}
		props.VpcSubnets = &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS}
	}
	fn := awslambda.NewFunction(scope, str(id), props)
	suppress(fn, "AwsSolutions-IAM4", "AWS's managed Lambda execution policies: write its own logs and manage its VPC "+
		"network interfaces, maintained by AWS as those services change",
		"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
		"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole")
	var url awslambda.FunctionUrl
	if p.URLAuth != "" {
		mode := awslambda.InvokeMode_BUFFERED
		if p.StreamResponses {
			mode = awslambda.InvokeMode_RESPONSE_STREAM
		}
		url = fn.AddFunctionUrl(&awslambda.FunctionUrlOptions{AuthType: p.URLAuth, InvokeMode: mode})
	}
	return &FerryFunction{Function: fn, SecurityGroup: sg, URL: url, host: p.Host, prefix: p.PathPrefix}
}

// Route is this function's entry in FERRY_ROUTER_ROUTES.
func (f *FerryFunction) Route() string {
	prefix := f.prefix
	if prefix == "" {
		prefix = "/"
	}
	return *f.Function.FunctionName() + "=" + f.host + prefix
}
