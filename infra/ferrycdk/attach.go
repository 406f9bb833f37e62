package ferrycdk

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
)

// AttachOptions put a function of your own behind ferry (RouterService.Attach).
type AttachOptions struct {
	Layer *FerryLayer // required
	// AppCmd starts the function's web server (FERRY_APP_CMD). If empty,
	// the bootstrap runs $LAMBDA_TASK_ROOT/run.sh, else the handler if it
	// is an executable file.
	AppCmd string
	// Host and PathPrefix route client requests to the function. With both
	// empty, it takes every path ("/").
	Host, PathPrefix string
	// Environment holds more ferry settings (FERRY_READINESS_PATH, say),
	// added to the function's own variables, which stay.
	Environment map[string]string
}

// Attach puts fn, a function of your CDK app, behind ferry: ferry's layer
// for its architecture, ferry's settings added to its environment (its own
// variables stay), the exec wrapper where its runtime is a managed one, the
// router's tasks allowed to invoke it, its route on every router task, and
// the tunnel endpoint open to its security groups. fn must run in the
// router's VPC, from subnets that reach the router tasks.
func (r *RouterService) Attach(fn awslambda.Function, o *AttachOptions) *FerryFunction {
	id := *fn.Node().Id()
	switch {
	case o == nil || o.Layer == nil:
		panic(fmt.Sprintf("Attach %s: AttachOptions.Layer is required", id))
	case !*fn.IsBoundToVpc() && !r.tunnel.Public:
		panic(fmt.Sprintf("Attach %s: the function runs outside a VPC, so it cannot dial the router's private tunnel endpoint: "+
			"give it the router's VPC and private subnets, or make the tunnel endpoint public", id))
	}
	fn.AddLayers(o.Layer.For(fn.Architecture()))
	if o.AppCmd != "" {
		fn.AddEnvironment(str("FERRY_APP_CMD"), str(o.AppCmd), nil)
	}
	if *fn.Runtime().Name() != *awslambda.Runtime_PROVIDED_AL2023().Name() {
		fn.AddEnvironment(str("AWS_LAMBDA_EXEC_WRAPPER"), str("/opt/ferry-exec-wrapper"), nil)
	}
	for k, v := range o.Environment {
		fn.AddEnvironment(str(k), str(v), nil)
	}
	r.grantInvoke(fn)
	if !r.tunnel.Public {
		r.tunnel.SecurityGroup.Connections().AllowFrom(fn, awsec2.Port_Tcp(num(TunnelPort)), str("tunnels from "+id))
	}
	f := &FerryFunction{Function: fn, host: o.Host, prefix: o.PathPrefix}
	r.routes = append(r.routes, f.Route())
	return f
}
