package main

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	cftypes "github.com/aws/aws-sdk-go-v2/service/cloudformation/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ferryrun/ferry/internal/testbin"
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
    "OtherVpc": {"Value": {"Ref": "OtherVpc"}},
    "OtherSubnet": {"Value": {"Ref": "OtherSubnet"}},
    "OtherGroup": {"Value": {"Fn::GetAtt": ["OtherGroup", "GroupId"]}}
  }
}`

// attachAWS is the local AWS, in the environment as a user's AWS would be,
// with a ferry stack of each tunnel mode: Ferry-us-east-1 (private) and
// Public. It returns the configuration and each stack's outputs.
func attachAWS(t *testing.T) (aws.Config, map[string]map[string]string) {
	endpoint := testbin.Moto(t)
	for _, k := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_ENDPOINT_URL", endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Chdir(t.TempDir())
	ctx := t.Context()
	cfg, err := awsConfig(ctx, ".local", &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
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
	for _, tc := range []struct {
		args   []string
		code   int
		output string
	}{
		{[]string{"attach"}, 2, "-function is required"},
		{[]string{"attach", "-function", "nope"}, 1, "function nope"},
		{[]string{"attach", "-function", "plain", "-stack", "Missing"}, 1, "ferry stack Missing"},
		{[]string{"attach", "-function", "plain", "-env", "FERRY_READYNESS_PATH=/healthz"}, 2, "FERRY_READYNESS_PATH is not a setting of ferry's bootstrap"},
		{[]string{"attach", "-function", "plain", "-env", "GREETING=x"}, 2, "want FERRY_NAME=value"},
		{[]string{"attach", "-function", "plain", "-host", "TAKEN.example"}, 1, "already routes taken.example* to other"},
		{[]string{"attach", "-function", "wrapped"}, 1, "already runs through AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap"},
		{[]string{"attach", "-function", "custom"}, 2, "-env FERRY_APP_CMD="},
		{[]string{"attach", "-function", "elsewhere"}, 1, "elsewhere runs in " + out["OtherVpc"]},
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
