package ferrycdk

import (
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
)

// NetworkProps configure NewNetwork.
type NetworkProps struct {
	// VpcID uses an existing VPC (looked up at synth; seed cdk.context.json
	// to synth offline). If empty, a new VPC is made.
	VpcID string
	// NatGateways in a new VPC. If zero, 1. Functions in private subnets
	// reach the internet (and AWS APIs) through them.
	NatGateways int
}

// NewNetwork returns the VPC ferry runs in: a new one over 2 AZs with
// public and private subnets and flow logs, or an existing one.
func NewNetwork(scope constructs.Construct, id string, props *NetworkProps) awsec2.IVpc {
	if props == nil {
		props = &NetworkProps{}
	}
	if props.VpcID != "" {
		return awsec2.Vpc_FromLookup(scope, str(id), &awsec2.VpcLookupOptions{VpcId: str(props.VpcID)})
	}
	nat := props.NatGateways
	if nat <= 0 {
		nat = 1
	}
	vpc := awsec2.NewVpc(scope, str(id), &awsec2.VpcProps{
		MaxAzs:      num(2),
		NatGateways: num(float64(nat)),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{
			{Name: str("public"), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: num(24)},
			{Name: str("private"), SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS, CidrMask: num(22)},
		},
	})
	vpc.AddFlowLog(str("FlowLog"), &awsec2.FlowLogOptions{
		Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(
			awslogs.NewLogGroup(scope, str(id+"FlowLogs"), &awslogs.LogGroupProps{Retention: awslogs.RetentionDays_ONE_MONTH}), nil),
		TrafficType: awsec2.FlowLogTrafficType_REJECT,
	})
	return vpc
}
