package advertise

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/ferryrun/ferry/internal/testbin"
)

// TestECSPublic: a task advertises the public IP of its
// own network interface, found in the local AWS's EC2 by the private
// address and MAC the task metadata gives, where another VPC holds an
// interface with the same private address.
func TestECSPublic(t *testing.T) {
	api := ec2.NewFromConfig(aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(testbin.Moto(t)),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		})})
	ctx := t.Context()
	const ip = "10.0.3.17"
	var macs []string // the task's interface, then another VPC's with the same address
	for range 2 {
		vpc, err := api.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
		if err != nil {
			t.Fatal(err)
		}
		sn, err := api.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.0.3.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		eni, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: sn.Subnet.SubnetId, PrivateIpAddress: aws.String(ip)})
		if err != nil {
			t.Fatal(err)
		}
		if len(macs) == 0 {
			eip, err := api.AllocateAddress(ctx, &ec2.AllocateAddressInput{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := api.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: eip.AllocationId, NetworkInterfaceId: eni.NetworkInterface.NetworkInterfaceId}); err != nil {
				t.Fatal(err)
			}
		}
		macs = append(macs, aws.ToString(eni.NetworkInterface.MacAddress))
	}
	eips, err := api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{})
	if err != nil || len(eips.Addresses) != 1 {
		t.Fatalf("addresses: %v %v", eips, err)
	}
	public := aws.ToString(eips.Addresses[0].PublicIp)
	for _, tc := range []struct {
		name, mac, want, err string
	}{
		{"the task's interface", strings.ToUpper(macs[0]), public + ":8443", ""},
		{"an interface with no public IP", macs[1], "", "has no public IP: run the service in public subnets"},
		{"no such interface", "0e:00:00:00:00:00", "", "no network interface with address " + ip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A stand-in for the ECS task metadata endpoint, which exists
			// only on ECS.
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, `{"Containers":[{"Name":"router","Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":[%q],"MACAddress":%q}]}]}`, ip, tc.mac)
			}))
			defer srv.Close()
			got, err := ECSPublic(ctx, srv.URL, "8443", api)
			if got != tc.want || (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ECSPublic = %q, %v; want %q, %q", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestECS(t *testing.T) {
	// A stand-in for the ECS task metadata endpoint, which exists only on ECS.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/task" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, `{"Containers":[{"Name":"router","Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":["10.0.3.17"]}]}]}`)
	}))
	defer srv.Close()
	got, err := ECS(context.Background(), srv.URL, "8443")
	if err != nil || got != "10.0.3.17:8443" {
		t.Errorf("ECS = %q, %v; want 10.0.3.17:8443", got, err)
	}
	if _, err := ECS(context.Background(), "", "8443"); err == nil || !strings.Contains(err.Error(), "ECS_CONTAINER_METADATA_URI_V4") {
		t.Errorf("off ECS: error = %v", err)
	}
}
