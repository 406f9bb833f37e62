// Package advertise finds the address a router task advertises to the
// functions it invokes, which they dial back: on ECS, the task's own
// private address (config.AdvertiseECS) or its public one
// (config.AdvertiseECSPublic). Each task advertises itself, not a load
// balancer: a tunnel must return to the task whose pool holds the requests
// waiting for it.
package advertise

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/ferryrun/ferry/router/config"
)

// ECS returns host:port for this task from the ECS task
// metadata endpoint (v4), given its URI ($ECS_CONTAINER_METADATA_URI_V4).
func ECS(ctx context.Context, metadataURI, port string) (string, error) {
	ip, _, err := taskNetwork(ctx, metadataURI, config.AdvertiseECS)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, port), nil
}

// NetworkInterfaces is the EC2 call ECSPublic makes.
type NetworkInterfaces interface {
	DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
}

// ECSPublic returns host:port for this task's public
// address: the public IP of the network interface the task metadata
// names (by its private address, and its MAC, since private addresses
// repeat across VPCs).
func ECSPublic(ctx context.Context, metadataURI, port string, api NetworkInterfaces) (string, error) {
	ip, mac, err := taskNetwork(ctx, metadataURI, config.AdvertiseECSPublic)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("addresses.private-ip-address"), Values: []string{ip}}}})
	if err != nil {
		return "", fmt.Errorf("%s=%s: this task's network interface (%s): %w", config.EnvAdvertise, config.AdvertiseECSPublic, ip, err)
	}
	for _, eni := range out.NetworkInterfaces {
		if !strings.EqualFold(aws.ToString(eni.MacAddress), mac) {
			continue
		}
		if eni.Association == nil || aws.ToString(eni.Association.PublicIp) == "" {
			return "", fmt.Errorf("%s=%s: this task's network interface %s has no public IP: run the service in public subnets with a public IP assigned (the stack does with -c tunnel=public)",
				config.EnvAdvertise, config.AdvertiseECSPublic, aws.ToString(eni.NetworkInterfaceId))
		}
		return net.JoinHostPort(aws.ToString(eni.Association.PublicIp), port), nil
	}
	return "", fmt.Errorf("%s=%s: no network interface with address %s and MAC %s", config.EnvAdvertise, config.AdvertiseECSPublic, ip, mac)
}

// taskNetwork reads this task's private IPv4 address and its MAC from the
// ECS task metadata endpoint (v4), whose URI is metadataURI.
func taskNetwork(ctx context.Context, metadataURI, mode string) (ip, mac string, err error) {
	if metadataURI == "" {
		return "", "", fmt.Errorf("%s=%s needs ECS_CONTAINER_METADATA_URI_V4: not running on ECS", config.EnvAdvertise, mode)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURI+"/task", nil)
	if err != nil {
		return "", "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("reading ECS task metadata: %w", err)
	}
	defer resp.Body.Close()
	var task struct {
		Containers []struct {
			Networks []struct {
				IPv4Addresses []string `json:"IPv4Addresses"`
				MACAddress    string   `json:"MACAddress"`
			} `json:"Networks"`
		} `json:"Containers"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&task); err != nil {
		return "", "", fmt.Errorf("decoding ECS task metadata: %w", err)
	}
	for _, c := range task.Containers {
		for _, n := range c.Networks {
			for _, ip := range n.IPv4Addresses {
				if net.ParseIP(ip) != nil {
					return ip, n.MACAddress, nil
				}
			}
		}
	}
	return "", "", fmt.Errorf("ECS task metadata lists no IPv4 address")
}
