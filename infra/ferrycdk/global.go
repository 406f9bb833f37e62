package ferrycdk

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	ga "github.com/aws/aws-cdk-go/awscdk/v2/awsglobalaccelerator"
	gaendpoints "github.com/aws/aws-cdk-go/awscdk/v2/awsglobalacceleratorendpoints"
	"github.com/aws/constructs-go/constructs/v10"
)

// GlobalRegion is where the global stack lives: AWS Global Accelerator's
// API is in us-west-2, whatever the regions it serves.
const GlobalRegion = "us-west-2"

// GlobalStackProps configure NewGlobalStack.
type GlobalStackProps struct {
	awscdk.StackProps
	// Regions are the region stacks it sends clients to; required. Each
	// must have been made with CrossRegionReferences on, as
	// NewRegionStacks makes them when it makes a global stack.
	Regions []*FerryStack
	// HTTPS: the region stacks serve 443 (they have a certificate), and
	// the accelerator takes it too.
	HTTPS bool
}

// GlobalStack is one entry point in front of every region: an AWS Global
// Accelerator with two static anycast addresses, taking TCP 80 (and 443)
// to the nearest healthy region's ALB, client addresses preserved. A
// region whose ALB has no healthy target is left out: its router tasks
// answer /readyz 503 when they cannot launch instances there
// (FERRY_ROUTER_UNREADY_AFTER), so traffic fails over to another region.
type GlobalStack struct {
	awscdk.Stack
	Accelerator ga.Accelerator
	Listener    ga.Listener
}

// NewGlobalStack builds the global entry point.
func NewGlobalStack(scope constructs.Construct, id string, props *GlobalStackProps) *GlobalStack {
	if props == nil || len(props.Regions) == 0 {
		panic(fmt.Sprintf("GlobalStack %s: Regions is required", id))
	}
	sp := props.StackProps
	if sp.Env == nil {
		sp.Env = &awscdk.Environment{}
	}
	sp.Env.Region = str(GlobalRegion)
	sp.CrossRegionReferences = yes
	if sp.Description == nil {
		sp.Description = str("ferry: one global entry point (AWS Global Accelerator) in front of the region stacks")
	}
	stack := awscdk.NewStack(scope, str(id), &sp)
	g := &GlobalStack{Stack: stack}
	g.Accelerator = ga.NewAccelerator(stack, str("Accelerator"), &ga.AcceleratorProps{
		AcceleratorName: str(id),
	})
	ports := []*ga.PortRange{{FromPort: num(80)}}
	if props.HTTPS {
		ports = append(ports, &ga.PortRange{FromPort: num(443)})
	}
	g.Listener = g.Accelerator.AddListener(str("Web"), &ga.ListenerOptions{
		PortRanges: &ports, Protocol: ga.ConnectionProtocol_TCP, ClientAffinity: ga.ClientAffinity_NONE,
	})
	for _, r := range props.Regions {
		stack.AddDependency(r.Stack, str("the accelerator sends clients to this region's load balancer"))
		g.Listener.AddEndpointGroup(str("Region-"+*r.Region()), &ga.EndpointGroupOptions{
			Region: r.Region(),
			// The ALB endpoint is healthy while its targets are: router
			// tasks whose /readyz answers 200.
			Endpoints: &[]ga.IEndpoint{gaendpoints.NewApplicationLoadBalancerEndpoint(r.Router.LoadBalancer,
				&gaendpoints.ApplicationLoadBalancerEndpointOptions{PreserveClientIp: yes})},
		})
	}
	awscdk.NewCfnOutput(stack, str("GlobalAddresses"), &awscdk.CfnOutputProps{
		Value:       awscdk.Fn_Join(str(" "), g.Accelerator.Ipv4Addresses()),
		Description: str("the accelerator's two static IPv4 addresses: point your domain's A records here"),
	})
	awscdk.NewCfnOutput(stack, str("GlobalDnsName"), &awscdk.CfnOutputProps{
		Value: g.Accelerator.DnsName(), Description: str("the accelerator's DNS name"),
	})
	return g
}
