package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/localstack/dataplane"
)

// attachDetach creates a function as its user would, apart from the
// stack (examples/cdk-app's Python web server, on a managed runtime, in no
// VPC), puts it behind the stack with ferry attach, restarts the local
// data plane (make local-start) and sends it a request through the
// router; then ferry detach, after which the function, its role, the
// tunnel group and the routes are as they were. It returns the restarted
// data plane's state.
func attachDetach(t *testing.T, e *env, cfg aws.Config, outputs map[string]string) dataplane.State {
	ctx := t.Context()
	const fn, host = "ferry-e2e-own-api", "own.example"
	lam, ec, im, sm := lambda.NewFromConfig(cfg), ec2.NewFromConfig(cfg), iam.NewFromConfig(cfg), ssm.NewFromConfig(cfg)
	role, err := im.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(fn),
		AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	arch := lambdatypes.ArchitectureX8664
	if runtime.GOARCH == "arm64" {
		arch = lambdatypes.ArchitectureArm64
	}
	if _, err := lam.CreateFunction(ctx, &lambda.CreateFunctionInput{
		FunctionName: aws.String(fn), Role: role.Role.Arn, Runtime: lambdatypes.RuntimePython313, Handler: aws.String("run.sh"),
		Architectures: []lambdatypes.Architecture{arch}, MemorySize: aws.Int32(512), Timeout: aws.Int32(30),
		Code:        &lambdatypes.FunctionCode{ZipFile: zipDir(t, filepath.Join(testbin.ModuleRoot(), "examples", "cdk-app", "app"))},
		Environment: &lambdatypes.Environment{Variables: map[string]string{"GREETING": "from its own deploy"}},
	}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, ctx, cfg, fn, outputs)
	ferry := filepath.Join(e.dist, "ferry")

	out := asUser(t, ferry+" attach -function "+fn+" -host "+host+" -env FERRY_READINESS_PATH=/healthz -state "+e.dir)
	if !strings.Contains(out, "attached") {
		t.Fatalf("ferry attach said:\n%s", out)
	}
	attached, err := lam.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(fn)})
	if err != nil {
		t.Fatal(err)
	}
	// Reachable: in the stack's VPC, in a group the tunnel group admits
	// on the tunnel port; invocable by the router's role.
	tunnel := ingress(t, ctx, ec, outputs["TunnelSecurityGroupId"])
	var admitted bool
	for _, g := range attached.VpcConfig.SecurityGroupIds {
		admitted = admitted || admits(t, ctx, ec, outputs["TunnelSecurityGroupId"], g, 8443)
	}
	if aws.ToString(attached.VpcConfig.VpcId) != outputs["VpcId"] || !slices.Equal(attached.VpcConfig.SubnetIds, strings.Split(outputs["PrivateSubnetIds"], ",")) || !admitted {
		t.Errorf("attached: VPC %s, subnets %v, groups %v; tunnel group's rules %s; want the stack's VPC %s, subnets %s, and a group admitted on 8443",
			aws.ToString(attached.VpcConfig.VpcId), attached.VpcConfig.SubnetIds, attached.VpcConfig.SecurityGroupIds, tunnel, outputs["VpcId"], outputs["PrivateSubnetIds"])
	}
	if pol, err := lam.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String(fn)}); err != nil ||
		!strings.Contains(aws.ToString(pol.Policy), outputs["RouterTaskRoleArn"]) || !strings.Contains(aws.ToString(pol.Policy), "lambda:InvokeFunction") {
		t.Errorf("attached function's policy: %v %v; want lambda:InvokeFunction for %s", pol, err, outputs["RouterTaskRoleArn"])
	}

	// The data plane runs what the local AWS holds: restarted, it runs the
	// attached function too, and the router serves it on its route.
	started := e.make(5*time.Minute, "local-start")
	st, err := dataplane.Load(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(st.Functions, fn) {
		t.Errorf("the restarted data plane runs %v, not %s:\n%s", st.Functions, fn, started)
	}
	awaitRoute(t, st.ClientURL, host, "/hello", func(status int, body string) bool {
		return status == http.StatusOK && strings.Contains(body, `"greeting": "from its own deploy"`) && strings.Contains(body, `"path": "/hello"`)
	})

	out = asUser(t, ferry+" detach -function "+fn+" -state "+e.dir)
	if !strings.Contains(out, "detached") {
		t.Fatalf("ferry detach said:\n%s", out)
	}
	if after := snapshot(t, ctx, cfg, fn, outputs); after != before {
		t.Errorf("after detach:\n%s\nbefore attach:\n%s", after, before)
	}
	if _, err := sm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/ferry/" + stack + "/attached/" + fn)}); !errors.As(err, new(*ssmtypes.ParameterNotFound)) {
		t.Errorf("the attachment's record after detach: %v; want it gone", err)
	}
	return st
}

// snapshot is everything ferry attach may change, as text: the function's
// layers, environment, network and policy; its role's inline policies;
// security groups made for it; the tunnel group's rules; the routes.
func snapshot(t *testing.T, ctx context.Context, cfg aws.Config, fn string, outputs map[string]string) string {
	t.Helper()
	lam, ec, im, sm := lambda.NewFromConfig(cfg), ec2.NewFromConfig(cfg), iam.NewFromConfig(cfg), ssm.NewFromConfig(cfg)
	c, err := lam.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(fn)})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	var layers []string
	for _, l := range c.Layers {
		layers = append(layers, aws.ToString(l.Arn))
	}
	env, _ := json.Marshal(c.Environment.Variables)
	var subnets, groups []string
	if c.VpcConfig != nil {
		subnets, groups = c.VpcConfig.SubnetIds, c.VpcConfig.SecurityGroupIds
	}
	b.WriteString("layers " + strings.Join(layers, ",") + "\nenv " + string(env) + "\nsubnets " + strings.Join(subnets, ",") + "\ngroups " + strings.Join(groups, ",") + "\n")
	statements := "none"
	if pol, err := lam.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String(fn)}); err == nil {
		var doc struct{ Statement []any }
		json.Unmarshal([]byte(aws.ToString(pol.Policy)), &doc)
		if len(doc.Statement) > 0 {
			statements = aws.ToString(pol.Policy)
		}
	} else if !errors.As(err, new(*lambdatypes.ResourceNotFoundException)) {
		t.Fatal(err)
	}
	b.WriteString("policy " + statements + "\n")
	rp, err := im.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(fn)})
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("role policies " + strings.Join(rp.PolicyNames, ",") + "\n")
	sgs, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:ferry:attached"), Values: []string{fn}}}})
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("groups made for it " + strings.Repeat("+", len(sgs.SecurityGroups)) + "\n")
	b.WriteString("tunnel group " + ingress(t, ctx, ec, outputs["TunnelSecurityGroupId"]) + "\n")
	routes, err := sm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(outputs["RoutesParameterName"])})
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("routes " + aws.ToString(routes.Parameter.Value) + "\n")
	return b.String()
}

// admits reports whether group takes TCP on port from the group from.
func admits(t *testing.T, ctx context.Context, ec *ec2.Client, group, from string, port int32) bool {
	t.Helper()
	out, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{group}})
	if err != nil || len(out.SecurityGroups) != 1 {
		t.Fatalf("security group %s: %v", group, err)
	}
	for _, p := range out.SecurityGroups[0].IpPermissions {
		if aws.ToString(p.IpProtocol) != "tcp" || aws.ToInt32(p.FromPort) > port || aws.ToInt32(p.ToPort) < port {
			continue
		}
		for _, pair := range p.UserIdGroupPairs {
			if aws.ToString(pair.GroupId) == from {
				return true
			}
		}
	}
	return false
}

// ingress is a security group's inbound rules, as JSON.
func ingress(t *testing.T, ctx context.Context, ec *ec2.Client, group string) string {
	t.Helper()
	out, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{group}})
	if err != nil || len(out.SecurityGroups) != 1 {
		t.Fatalf("security group %s: %v", group, err)
	}
	b, _ := json.Marshal(out.SecurityGroups[0].IpPermissions)
	return string(b)
}

// zipDir is dir's files as a Lambda code zip, executable where they are.
func zipDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := de.Info()
		h := &zip.FileHeader{Name: de.Name(), Method: zip.Deflate}
		h.SetMode(info.Mode())
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
