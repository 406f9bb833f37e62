package ferrycdk_test

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/cloudformationinclude"
	"github.com/aws/jsii-runtime-go"

	"github.com/ferryrun/ferry/internal/testbin"
)

// TestSAMExampleJoinsTheStack: examples/sam/template.yaml is read by CDK's
// own CloudFormation reader (cloudformation-include, which refuses what it
// cannot read: an unknown resource type, a malformed intrinsic) and checked
// against CloudFormation's rules as CDK synthesizes it, and every
// value it takes from the ferry stack is one the stack gives, and the
// right one: each Fn::ImportValue names an export of the stack; the
// exported tunnel group is the one the router tasks carry; the subnets
// are the private ones; the role is the router's task role; the layer
// parameter its default names is one the stack writes.
func TestSAMExampleJoinsTheStack(t *testing.T) {
	st, tmpl := stack(t)
	stackName := *st.Stack.StackName()

	// CDK also checks the template against CloudFormation's rules; as
	// errors, not warnings.
	app := awscdk.NewApp(&awscdk.AppProps{Context: &map[string]any{"@aws-cdk/core:validateAgainstDefaultRules": true}})
	sam := awscdk.NewStack(app, jsii.String("Sam"), nil)
	cloudformationinclude.NewCfnInclude(sam, jsii.String("Template"), &cloudformationinclude.CfnIncludeProps{
		TemplateFile: jsii.String(filepath.Join(testbin.ModuleRoot(), "examples", "sam", "template.yaml")),
	})
	var samT struct {
		Transform  any
		Parameters map[string]struct{ Type, Default string }
		Resources  map[string]struct {
			Type       string
			Properties map[string]any
		}
	}
	b, _ := json.Marshal(assertions.Template_FromStack(sam, nil).ToJSON())
	json.Unmarshal(b, &samT)
	if samT.Transform != "AWS::Serverless-2016-10-31" || samT.Resources["Api"].Type != "AWS::Serverless::Function" {
		t.Fatalf("read back without its SAM transform or function: %s", b)
	}

	// The stack's exports, by name, as the values behind them.
	exports := map[string]string{}
	for _, o := range (*tmpl.ToJSON())["Outputs"].(map[string]any) {
		o := o.(map[string]any)
		if e, ok := o["Export"].(map[string]any); ok {
			v, _ := json.Marshal(o["Value"])
			exports[e["Name"].(string)] = string(v)
		}
	}
	stackParam := samT.Parameters["FerryStack"].Default
	if stackParam != stackName {
		t.Errorf("the template's FerryStack defaults to %q, the stack is %q", stackParam, stackName)
	}
	imports := regexp.MustCompile(`"Fn::ImportValue":\{"Fn::Sub":"\$\{FerryStack\}-([A-Za-z]+)"\}`).FindAllStringSubmatch(string(b), -1)
	if len(imports) < 4 {
		t.Fatalf("%d imports in the template, want the VPC, subnets, tunnel group and router role", len(imports))
	}
	for _, m := range imports {
		if _, ok := exports[stackName+"-"+m[1]]; !ok {
			t.Errorf("the template imports %s-%s, which the stack does not export (exports: %v)", stackName, m[1], slices.Sorted(maps.Keys(exports)))
		}
	}

	// What the exports carry.
	svc := resources(tmpl, "AWS::ECS::Service")
	var serviceGroups string
	for _, r := range svc {
		v, _ := json.Marshal(r["Properties"].(map[string]any)["NetworkConfiguration"])
		serviceGroups = string(v)
	}
	if g := exports[stackName+"-TunnelSecurityGroupId"]; !strings.Contains(serviceGroups, g) {
		t.Errorf("exported tunnel group %s is not on the router service (%s)", g, serviceGroups)
	}
	if r := exports[stackName+"-RouterTaskRoleArn"]; !strings.Contains(r, "RouterTaskRole") || !strings.Contains(r, "Arn") {
		t.Errorf("exported router role %s: want the router task role's ARN", r)
	}
	if s := exports[stackName+"-PrivateSubnetIds"]; !strings.Contains(s, "privateSubnet1") || strings.Contains(s, "publicSubnet") {
		t.Errorf("exported subnets %s: want the private subnets", s)
	}
	// The layer, through the parameter the stack writes.
	layerParam := samT.Parameters["FerryLayerArn"]
	var written bool
	for _, r := range resources(tmpl, "AWS::SSM::Parameter") {
		p := r["Properties"].(map[string]any)
		v, _ := json.Marshal(p["Value"])
		if p["Name"] == layerParam.Default && strings.Contains(string(v), "FerryLayerArm64") {
			written = true
		}
	}
	if layerParam.Type != "AWS::SSM::Parameter::Value<String>" || !written {
		t.Errorf("layer parameter %+v: want an SSM parameter the stack writes with its arm64 layer", layerParam)
	}
}
