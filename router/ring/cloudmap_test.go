package ring

import (
	"context"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/ferryrun/ferry/internal/testbin"
)

// TestCloudMap lists replicas registered in Cloud Map, as ECS registers
// router tasks, through the real SDK against the local AWS (moto).
func TestCloudMap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	local, err := testbin.StartLocalAWS(port, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Stop(syscall.SIGTERM, 0) })

	ctx := context.Background()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")))
	if err != nil {
		t.Fatal(err)
	}
	api := sd.NewFromConfig(cfg, func(o *sd.Options) { o.BaseEndpoint = aws.String(local.Endpoint) })
	ns, err := api.CreatePrivateDnsNamespace(ctx, &sd.CreatePrivateDnsNamespaceInput{Name: aws.String("ferry.internal"), Vpc: aws.String("vpc-12345678")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := api.GetOperation(ctx, &sd.GetOperationInput{OperationId: ns.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := api.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String("router"), NamespaceId: aws.String(op.Operation.Targets["NAMESPACE"])})
	if err != nil {
		t.Fatal(err)
	}
	for id, ip := range map[string]string{"task-a": "10.0.1.7", "task-b": "10.0.2.9", "task-odd": "not an address"} {
		if _, err := api.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String(id),
			Attributes: map[string]string{"AWS_INSTANCE_IPV4": ip}}); err != nil {
			t.Fatal(err)
		}
	}
	src := CloudMap{API: api, Namespace: "ferry.internal", Service: "router", Port: 8444, LocalEndpoint: true}
	got, err := src.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"10.0.1.7:8444", "10.0.2.9:8444"}; !slices.Equal(got, want) {
		t.Fatalf("members = %v, want %v (an instance without an IPv4 address skipped)", got, want)
	}
	if _, err := (CloudMap{API: api, Namespace: "ferry.internal", Service: "nope", Port: 8444, LocalEndpoint: true}).Members(ctx); err == nil {
		t.Error("a service that does not exist listed no error")
	}
}
