package config

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"
)

// AdvertiseECS is the FERRY_ROUTER_ADVERTISE value that means "this ECS
// task's own private address". A tunnel must come back to the router task
// that launched its invocation (that task's pool holds the waiting
// requests), so each task advertises itself rather than a load balancer.
const AdvertiseECS = "ecs"

// ResolveECSAdvertise returns host:port for this task from the ECS task
// metadata endpoint (v4), given its URI ($ECS_CONTAINER_METADATA_URI_V4).
func ResolveECSAdvertise(ctx context.Context, metadataURI, port string) (string, error) {
	if metadataURI == "" {
		return "", fmt.Errorf("%s=%s needs ECS_CONTAINER_METADATA_URI_V4: not running on ECS", EnvAdvertise, AdvertiseECS)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURI+"/task", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("reading ECS task metadata: %w", err)
	}
	defer resp.Body.Close()
	var task struct {
		Containers []struct {
			Networks []struct {
				IPv4Addresses []string `json:"IPv4Addresses"`
			} `json:"Networks"`
		} `json:"Containers"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&task); err != nil {
		return "", fmt.Errorf("decoding ECS task metadata: %w", err)
	}
	for _, c := range task.Containers {
		for _, n := range c.Networks {
			for _, ip := range n.IPv4Addresses {
				if net.ParseIP(ip) != nil {
					return net.JoinHostPort(ip, port), nil
				}
			}
		}
	}
	return "", fmt.Errorf("ECS task metadata lists no IPv4 address")
}
