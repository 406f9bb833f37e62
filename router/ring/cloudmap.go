package ring

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DiscoverAPI is the part of the Cloud Map client CloudMap calls.
type DiscoverAPI interface {
	DiscoverInstances(ctx context.Context, in *sd.DiscoverInstancesInput, optFns ...func(*sd.Options)) (*sd.DiscoverInstancesOutput, error)
}

// CloudMap lists the replicas registered in an AWS Cloud Map service (ECS
// registers each router task there, and deregisters it when it stops).
// Each member is an instance's IPv4 address with Port.
type CloudMap struct {
	API       DiscoverAPI
	Namespace string
	Service   string
	Port      int
	// LocalEndpoint: the client talks to a local AWS at a fixed address,
	// so the data-plane host prefix ("data-") is not added to it.
	LocalEndpoint bool
}

// maxMembers bounds the instances read: ECS services scale to far fewer.
const maxMembers = 100

// Members asks Cloud Map for the registered instances.
func (c CloudMap) Members(ctx context.Context) ([]string, error) {
	var opts []func(*sd.Options)
	if c.LocalEndpoint {
		opts = append(opts, noHostPrefix)
	}
	out, err := c.API.DiscoverInstances(ctx, &sd.DiscoverInstancesInput{
		NamespaceName: aws.String(c.Namespace), ServiceName: aws.String(c.Service),
		HealthStatus: sdtypes.HealthStatusFilterHealthyOrElseAll, MaxResults: aws.Int32(maxMembers),
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("cloud map %s/%s: %w", c.Namespace, c.Service, err)
	}
	var addrs []string
	for _, in := range out.Instances {
		ip := net.ParseIP(in.Attributes["AWS_INSTANCE_IPV4"])
		if ip == nil {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(ip.String(), strconv.Itoa(c.Port)))
	}
	return addrs, nil
}

// noHostPrefix keeps the endpoint's host as it is: the SDK's data-plane
// prefix ("data-") would turn 127.0.0.1 into a name that resolves nowhere.
// The setting is a stack value, which each call clears first, so it is
// set by a middleware of the call.
func noHostPrefix(o *sd.Options) {
	o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("FerryNoHostPrefix",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				return next.HandleInitialize(smithyhttp.DisableEndpointHostPrefix(ctx, true), in)
			}), middleware.After)
	})
}
