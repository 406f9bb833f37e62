package main

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	cftypes "github.com/aws/aws-sdk-go-v2/service/cloudformation/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ferryrun/ferry/router/config"
)

// attachStack stands in for a deployed ferry stack: what it exports for
// functions, and its routes and layer parameters (one route taken).
const attachStack = `{
  "Parameters": {"TunnelMode": {"Type": "String"}, "LayerArn": {"Type": "String"}},
  "Resources": {
    "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
    "Private": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.0.1.0/24"}},
    "Tunnel": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "tunnel", "VpcId": {"Ref": "Vpc"}}},
    "OtherVpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.1.0.0/16"}},
    "OtherSubnet": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "OtherVpc"}, "CidrBlock": "10.1.1.0/24"}},
    "OtherGroup": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "other", "VpcId": {"Ref": "OtherVpc"}}},
    "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}}},
    "Routes": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": {"Fn::Sub": "/ferry/${AWS::StackName}/routes"}, "Type": "String",
      "Value": "{\"routes\": [{\"function\": \"other\", \"host\": \"taken.example\"}]}"}},
    "LayerX86": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": {"Fn::Sub": "/ferry/${AWS::StackName}/layer-arn/x86_64"}, "Type": "String",
      "Value": {"Ref": "LayerArn"}}}
  },
  "Outputs": {
    "VpcId": {"Value": {"Ref": "Vpc"}},
    "PrivateSubnetIds": {"Value": {"Ref": "Private"}},
    "TunnelSecurityGroupId": {"Value": {"Fn::GetAtt": ["Tunnel", "GroupId"]}},
    "RouterTaskRoleArn": {"Value": {"Fn::GetAtt": ["Role", "Arn"]}},
    "RoutesParameterName": {"Value": {"Fn::Sub": "/ferry/${AWS::StackName}/routes"}},
    "TunnelMode": {"Value": {"Ref": "TunnelMode"}},
    "StackRoutes": {"Value": "sample=/"},
    "OtherVpc": {"Value": {"Ref": "OtherVpc"}},
    "OtherSubnet": {"Value": {"Ref": "OtherSubnet"}},
    "OtherGroup": {"Value": {"Fn::GetAtt": ["OtherGroup", "GroupId"]}}
  }
}`

// attachAWS is the local AWS, in the environment as a user's AWS would be,
// with a ferry stack of each tunnel mode: Ferry-us-east-1 (private) and
// Public. It returns the configuration and each stack's outputs.
func attachAWS(t *testing.T) (aws.Config, map[string]map[string]string) {
	cfg := useLocalAWS(t)
	ctx := t.Context()
	layer, err := lambda.NewFromConfig(cfg).PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("ferry"),
		Content: &lambdatypes.LayerVersionContentInput{ZipFile: emptyZip(t)}})
	if err != nil {
		t.Fatal(err)
	}
	cf := cloudformation.NewFromConfig(cfg)
	outputs := map[string]map[string]string{}
	for name, mode := range map[string]string{"Ferry-us-east-1": "private", "Public": "public"} {
		if _, err := cf.CreateStack(ctx, &cloudformation.CreateStackInput{StackName: aws.String(name), TemplateBody: aws.String(attachStack),
			Parameters: []cftypes.Parameter{{ParameterKey: aws.String("TunnelMode"), ParameterValue: aws.String(mode)},
				{ParameterKey: aws.String("LayerArn"), ParameterValue: layer.LayerVersionArn}}}); err != nil {
			t.Fatal(err)
		}
		st, err := cf.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		outputs[name] = map[string]string{}
		for _, o := range st.Stacks[0].Outputs {
			outputs[name][aws.ToString(o.OutputKey)] = aws.ToString(o.OutputValue)
		}
	}
	return cfg, outputs
}

// TestAttachRefuses: ferry attach refuses, with the reason and before it
// changes anything, a function it cannot put behind the stack; detach
// refuses one that is not attached. (TestLocalAWS attaches and detaches a
// function for real and sends it a request through the router.)
func TestAttachRefuses(t *testing.T) {
	cfg, stacks := attachAWS(t)
	ctx := t.Context()
	out := stacks["Ferry-us-east-1"]
	lam := lambda.NewFromConfig(cfg)
	for _, f := range []struct {
		name    string
		runtime lambdatypes.Runtime
		env     map[string]string
		vpc     *lambdatypes.VpcConfig
	}{
		{"plain", lambdatypes.RuntimePython313, map[string]string{"GREETING": "hi"}, nil},
		{"wrapped", lambdatypes.RuntimePython313, map[string]string{"AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap"}, nil},
		{"custom", lambdatypes.RuntimeProvidedal2023, nil, nil},
		{"elsewhere", lambdatypes.RuntimeNodejs22x, nil, &lambdatypes.VpcConfig{SubnetIds: []string{out["OtherSubnet"]}, SecurityGroupIds: []string{out["OtherGroup"]}}},
		{"granted", lambdatypes.RuntimePython313, nil, nil},
	} {
		if _, err := lam.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(f.name), Role: aws.String(out["RouterTaskRoleArn"]),
			Runtime: f.runtime, Handler: aws.String("run.sh"), Code: &lambdatypes.FunctionCode{ZipFile: emptyZip(t)},
			Environment: &lambdatypes.Environment{Variables: f.env}, VpcConfig: f.vpc}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := lam.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("plain")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lam.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("plain")}); err != nil {
		t.Fatal(err)
	}
	// Someone put the router's statement there by hand, as README once said to.
	if _, err := lam.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String("granted"), StatementId: aws.String("ferry-router-Ferry-us-east-1"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("123456789012")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		output string
	}{
		{[]string{"attach"}, 2, "-function is required"},
		{[]string{"attach", "-function", "nope"}, 1, "function nope"},
		{[]string{"attach", "-function", "plain"}, 1, "the stack's own route already takes *"},
		{[]string{"attach", "-function", "plain", "-path", "/"}, 1, "the stack's own route already takes */"},
		{[]string{"attach", "-function", "plain:1", "-host", "a.example"}, 1, "names version 1 of plain"},
		{[]string{"attach", "-function", "plain", "-path", "api"}, 2, "must start with /"},
		{[]string{"attach", "-function", "plain", "-stack", "Missing"}, 1, "ferry stack Missing"},
		{[]string{"attach", "-function", "plain", "-env", "FERRY_READYNESS_PATH=/healthz"}, 2, "FERRY_READYNESS_PATH is not a setting of ferry's bootstrap"},
		{[]string{"attach", "-function", "plain", "-env", "GREETING=x"}, 2, "want FERRY_NAME=value"},
		{[]string{"attach", "-function", "plain", "-host", "TAKEN.example"}, 1, "already routes taken.example* to other"},
		{[]string{"attach", "-function", "wrapped", "-host", "a.example"}, 1, "already runs through AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap"},
		{[]string{"attach", "-function", "custom", "-host", "a.example"}, 2, "-env FERRY_APP_CMD="},
		{[]string{"attach", "-function", "elsewhere", "-host", "a.example"}, 1, "elsewhere runs in " + out["OtherVpc"]},
		{[]string{"attach", "-function", "granted", "-host", "a.example"}, 1, "granted's policy already has a statement ferry-router-Ferry-us-east-1"},
		{[]string{"detach", "-function", "plain"}, 1, "plain is not attached to Ferry-us-east-1"},
	} {
		var stdout, stderr bytes.Buffer
		code := exitCode(run(context.Background(), tc.args, &stdout, &stderr), &stderr)
		if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.output) {
			t.Errorf("ferry %s: exit %d, %q %q; want exit %d with %q", strings.Join(tc.args, " "), code, stdout.String(), stderr.String(), tc.code, tc.output)
		}
	}
	// Refused before anything changed.
	groups, err := ec2.NewFromConfig(cfg).DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{"ferry:attached"}}}})
	if err != nil || len(groups.SecurityGroups) != 0 {
		t.Errorf("security groups made by attach: %v %v; want none", groups, err)
	}
	records, err := ssm.NewFromConfig(cfg).GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/ferry/Ferry-us-east-1/attached")})
	if err != nil || len(records.Parameters) != 0 {
		t.Errorf("attachment records: %v %v; want none", records, err)
	}
	after, err := lam.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("plain")})
	if err != nil || len(after.Layers) != len(before.Layers) || after.VpcConfig != nil || len(after.Environment.Variables) != 1 {
		t.Errorf("plain after refusals: layers %v, VPC %v, env %v (%v); want it untouched", after.Layers, after.VpcConfig, after.Environment, err)
	}
}

// TestAttachPublicTunnel: behind a stack whose tunnel is public, attach
// leaves the function where it runs (no VPC, group or role policy) and
// detach restores it exactly.
func TestAttachPublicTunnel(t *testing.T) {
	cfg, stacks := attachAWS(t)
	ctx := t.Context()
	out := stacks["Public"]
	lam, sm := lambda.NewFromConfig(cfg), ssm.NewFromConfig(cfg)
	if _, err := lam.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("anywhere"), Role: aws.String(out["RouterTaskRoleArn"]),
		Runtime: lambdatypes.RuntimePython313, Handler: aws.String("run.sh"), Code: &lambdatypes.FunctionCode{ZipFile: emptyZip(t)},
		Environment: &lambdatypes.Environment{Variables: map[string]string{"GREETING": "hi"}}}); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		c, err := lam.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("anywhere")})
		if err != nil {
			t.Fatal(err)
		}
		groups, err := ec2.NewFromConfig(cfg).DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
			Filters: []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{"ferry:attached"}}}})
		if err != nil {
			t.Fatal(err)
		}
		routes, err := sm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(out["RoutesParameterName"])})
		if err != nil {
			t.Fatal(err)
		}
		rs, err := config.ParseRoutesDocument([]byte(aws.ToString(routes.Parameter.Value)))
		if err != nil {
			t.Fatal(err)
		}
		var layers []string
		for _, l := range c.Layers {
			layers = append(layers, aws.ToString(l.Arn))
		}
		return fmt.Sprintf("layers %v\nenv %v\nvpc %v\ngroups made %d\nroutes %+v", layers, c.Environment.Variables, c.VpcConfig != nil && len(c.VpcConfig.SubnetIds) > 0,
			len(groups.SecurityGroups), rs)
	}
	ferry := func(args ...string) string {
		var stdout, stderr bytes.Buffer
		if code := exitCode(run(context.Background(), args, &stdout, &stderr), &stderr); code != 0 {
			t.Fatalf("ferry %s: exit %d: %s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	before := state()
	said := ferry("attach", "-function", "anywhere", "-stack", "Public", "-host", "anywhere.example", "-env", "FERRY_READINESS_PATH=/healthz")
	attached := state()
	for _, want := range []string{"layers [arn:aws:lambda:", "AWS_LAMBDA_EXEC_WRAPPER:/opt/ferry-exec-wrapper", "FERRY_READINESS_PATH:/healthz", "GREETING:hi",
		"vpc false", "groups made 0", "Function:anywhere Host:anywhere.example"} {
		if !strings.Contains(attached, want) {
			t.Errorf("attached with a public tunnel:\n%s\nwant %q (attach said %q)", attached, want, said)
		}
	}
	if pol, err := lam.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String("anywhere")}); err != nil || !strings.Contains(aws.ToString(pol.Policy), out["RouterTaskRoleArn"]) {
		t.Errorf("policy after attach: %v %v; want the router's role allowed", pol, err)
	}
	ferry("detach", "-function", "anywhere", "-stack", "Public")
	if after := state(); after != before {
		t.Errorf("after detach:\n%s\nbefore attach:\n%s", after, before)
	}
	if pol, err := lam.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String("anywhere")}); err == nil && strings.Contains(aws.ToString(pol.Policy), "ferry-router") {
		t.Errorf("policy after detach: %s; want the router's statement gone", aws.ToString(pol.Policy))
	}
}

// TestAttachPrivateTunnel: behind a stack whose tunnel is private, a
// function already in the stack's VPC keeps its subnets and groups and
// gains one the tunnel group admits; one whose attach stops halfway (at
// its update: the layer named is gone) is left by detach as it was.
func TestAttachPrivateTunnel(t *testing.T) {
	cfg, stacks := attachAWS(t)
	ctx := t.Context()
	out := stacks["Ferry-us-east-1"]
	lam, ec := lambda.NewFromConfig(cfg), ec2.NewFromConfig(cfg)
	own, err := ec.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("own"), Description: aws.String("own"), VpcId: aws.String(out["VpcId"])})
	if err != nil {
		t.Fatal(err)
	}
	for name, vpc := range map[string]*lambdatypes.VpcConfig{
		"invpc":   {SubnetIds: []string{out["PrivateSubnetIds"]}, SecurityGroupIds: []string{aws.ToString(own.GroupId)}},
		"halfway": nil,
	} {
		if _, err := lam.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(name), Role: aws.String(out["RouterTaskRoleArn"]),
			Runtime: lambdatypes.RuntimePython313, Handler: aws.String("run.sh"), Code: &lambdatypes.FunctionCode{ZipFile: emptyZip(t)},
			Environment: &lambdatypes.Environment{Variables: map[string]string{"GREETING": "hi"}}, VpcConfig: vpc}); err != nil {
			t.Fatal(err)
		}
	}
	ferry := func(wantCode int, args ...string) string {
		var stdout, stderr bytes.Buffer
		if code := exitCode(run(context.Background(), args, &stdout, &stderr), &stderr); code != wantCode {
			t.Fatalf("ferry %s: exit %d, want %d: %s%s", strings.Join(args, " "), code, wantCode, stdout.String(), stderr.String())
		}
		return stdout.String() + stderr.String()
	}
	state := func(fn string) string {
		c, err := lam.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: &fn})
		if err != nil {
			t.Fatal(err)
		}
		var subnets, groups []string
		if c.VpcConfig != nil {
			subnets, groups = c.VpcConfig.SubnetIds, c.VpcConfig.SecurityGroupIds
		}
		made, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
			Filters: []ec2types.Filter{{Name: aws.String("tag:ferry:attached"), Values: []string{fn}}}})
		if err != nil {
			t.Fatal(err)
		}
		tunnel, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{out["TunnelSecurityGroupId"]}})
		if err != nil {
			t.Fatal(err)
		}
		rules := 0
		for _, p := range tunnel.SecurityGroups[0].IpPermissions {
			rules += len(p.UserIdGroupPairs)
		}
		policies, err := iam.NewFromConfig(cfg).ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(out["RouterTaskRoleArn"][strings.LastIndex(out["RouterTaskRoleArn"], "/")+1:])})
		if err != nil {
			t.Fatal(err)
		}
		pol := "none"
		if p, err := lam.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: &fn}); err == nil {
			pol = fmt.Sprint(strings.Count(aws.ToString(p.Policy), `"Sid"`), " statement(s)")
		}
		return fmt.Sprintf("layers %d, env %v, subnets %v, groups %v, groups made %d, tunnel rules %d, role policies %v, policy %s",
			len(c.Layers), c.Environment.Variables, subnets, groups, len(made.SecurityGroups), rules, policies.PolicyNames, pol)
	}

	before := state("invpc")
	ferry(0, "attach", "-function", "invpc", "-host", "invpc.example")
	c, err := lam.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("invpc")})
	if err != nil {
		t.Fatal(err)
	}
	if g := c.VpcConfig.SecurityGroupIds; len(g) != 2 || g[0] != aws.ToString(own.GroupId) || !slices.Equal(c.VpcConfig.SubnetIds, []string{out["PrivateSubnetIds"]}) {
		t.Errorf("in the stack's VPC, attached: subnets %v, groups %v; want its own subnet and group, and one more", c.VpcConfig.SubnetIds, g)
	}
	if s := state("invpc"); !strings.Contains(s, "groups made 1, tunnel rules 1, role policies []") {
		t.Errorf("attached: %s; want a group made, admitted, and no role policy (it was in the VPC already)", s)
	}
	ferry(0, "detach", "-function", "invpc")
	if after := state("invpc"); after != before {
		t.Errorf("after detach:\n%s\nbefore attach:\n%s", after, before)
	}

	before = state("halfway")
	sm := ssm.NewFromConfig(cfg)
	layer, err := sm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/ferry/Ferry-us-east-1/layer-arn/x86_64")})
	if err != nil {
		t.Fatal(err)
	}
	setLayer := func(arn string) {
		if _, err := sm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/ferry/Ferry-us-east-1/layer-arn/x86_64"), Value: &arn,
			Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
	}
	setLayer(aws.ToString(layer.Parameter.Value) + "9") // a version that does not exist
	said := ferry(1, "attach", "-function", "halfway", "-host", "halfway.example")
	setLayer(aws.ToString(layer.Parameter.Value))
	if !strings.Contains(said, "attach stopped at adding layer") || !strings.Contains(said, "ferry detach -function halfway -stack Ferry-us-east-1 undoes what was done") {
		t.Errorf("attach that could not finish said %q", said)
	}
	ferry(0, "detach", "-function", "halfway")
	if after := state("halfway"); after != before {
		t.Errorf("after detach of a half-done attach:\n%s\nbefore attach:\n%s", after, before)
	}
}

func emptyZip(t *testing.T) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, _ := zw.Create("run.sh")
	w.Write([]byte("#!/bin/sh\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
