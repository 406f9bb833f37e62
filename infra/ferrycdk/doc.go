// Package ferrycdk holds ferry's CDK constructs and the per-region stack:
// a VPC, the router on ECS Fargate behind a public ALB, the tunnel port on
// each router task (private, or public for functions outside the VPC),
// the tunnel secret, the bootstrap layer for both architectures,
// functions that use it, and a dashboard with alarms.
//
// Each construct takes typed props with documented defaults and can be used
// from other CDK apps: FerryLayer and FerryFunction put ferry in front of
// your own functions.
package ferrycdk

import (
	"github.com/aws/jsii-runtime-go"

	"github.com/ferryrun/ferry/router/config"
)

// Ports the router listens on; see router/config.
const (
	IngressPort = config.IngressPort
	TunnelPort  = config.TunnelPort
	AdminPort   = config.AdminPort
	PeerPort    = config.PeerPort
)

var (
	str = jsii.String
	num = jsii.Number[float64]
	yes = jsii.Bool(true)
	no  = func() *bool { return jsii.Bool(false) }
)
