package ferrycdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/ferryrun/ferry/infra/ferrycdk"
	"github.com/ferryrun/ferry/internal/permissions"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/layers/layerzip"
)

// artifacts holds real layer and sample zips, built once.
var artifacts string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "infra-test-")
	if err == nil {
		_, err = layerzip.Build(context.Background(), testbin.ModuleRoot(), dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	artifacts = dir
	code := m.Run()
	// No jsii.Close(): jsii-runtime-go v1.139.0 races in its own Close under
	// -race. The jsii node process ends when its stdin closes with us.
	os.RemoveAll(dir)
	os.Exit(code)
}

func newApp(ctx map[string]any) awscdk.App {
	ctx[ferrycdk.CtxArtifactsDir] = artifacts
	// CloudFormation's own rules, checked as CDK synthesizes: errors.
	ctx["@aws-cdk/core:validateAgainstDefaultRules"] = true
	return awscdk.NewApp(&awscdk.AppProps{Context: &ctx})
}

var (
	oneStack     *ferrycdk.FerryStack
	oneTemplate  assertions.Template
	oneStackOnce sync.Once

	publicOne     *ferrycdk.FerryStack
	publicTmpl    assertions.Template
	publicOneOnce sync.Once
)

// publicStack synthesizes the one-region stack with a public tunnel
// endpoint (-c tunnel=public) once.
func publicStack(t *testing.T) (*ferrycdk.FerryStack, assertions.Template) {
	t.Helper()
	publicOneOnce.Do(func() {
		stacks, err := ferrycdk.NewRegionStacks(newApp(map[string]any{ferrycdk.CtxTunnel: "public"}), testbin.ModuleRoot())
		if err != nil {
			panic(err)
		}
		publicOne = stacks[0]
		publicTmpl = assertions.Template_FromStack(publicOne.Stack, nil)
	})
	return publicOne, publicTmpl
}

// modes are the stack as deployed with each tunnel endpoint.
func modes(t *testing.T) map[string]func(*testing.T) (*ferrycdk.FerryStack, assertions.Template) {
	return map[string]func(*testing.T) (*ferrycdk.FerryStack, assertions.Template){"private tunnel": stack, "public tunnel": publicStack}
}

// stack synthesizes the default one-region stack once for the tests that
// only read it.
func stack(t *testing.T) (*ferrycdk.FerryStack, assertions.Template) {
	t.Helper()
	oneStackOnce.Do(func() {
		stacks, err := ferrycdk.NewRegionStacks(newApp(map[string]any{}), testbin.ModuleRoot())
		if err != nil {
			panic(err)
		}
		oneStack = stacks[0]
		oneTemplate = assertions.Template_FromStack(oneStack.Stack, nil)
	})
	return oneStack, oneTemplate
}

// resources returns the template's resources of one type as plain JSON.
func resources(tmpl assertions.Template, typ string) map[string]map[string]any {
	raw := tmpl.FindResources(jsii.String(typ), nil)
	b, _ := json.Marshal(raw)
	var out map[string]map[string]any
	json.Unmarshal(b, &out)
	return out
}

func TestResourcesPerRegionStack(t *testing.T) {
	// GIVEN the default context, WHEN synthesized, THEN one of each part.
	_, tmpl := stack(t)
	counts := map[string]int{
		"AWS::Lambda::LayerVersion":                   2,
		"AWS::Lambda::Function":                       1,
		"AWS::ECS::Cluster":                           1,
		"AWS::ECS::Service":                           1,
		"AWS::ElasticLoadBalancingV2::LoadBalancer":   1, // the client ALB; tunnels reach the tasks directly
		"AWS::SecretsManager::Secret":                 1,
		"AWS::CloudWatch::Dashboard":                  1,
		"AWS::CloudWatch::Alarm":                      4,
		"AWS::ApplicationAutoScaling::ScalableTarget": 1,
	}
	for typ, n := range counts {
		t.Run(typ, func(t *testing.T) { tmpl.ResourceCountIs(jsii.String(typ), jsii.Number(n)) })
	}
}

func TestLayerArchitectures(t *testing.T) {
	_, tmpl := stack(t)
	for _, arch := range []string{"arm64", "x86_64"} {
		tmpl.HasResourceProperties(jsii.String("AWS::Lambda::LayerVersion"), map[string]any{
			"CompatibleArchitectures": []string{arch},
			"CompatibleRuntimes":      []string{"provided.al2023", "nodejs22.x", "python3.13"},
		})
	}
	tmpl.HasResourceProperties(jsii.String("AWS::Lambda::Function"), map[string]any{
		"Architectures": []string{"arm64"}, "Runtime": "provided.al2023",
		"Layers":    assertions.Match_AnyValue(),
		"VpcConfig": assertions.Match_ObjectLike(&map[string]any{"SubnetIds": assertions.Match_AnyValue()}),
	})
}

func TestRouterRunsOnARM64Fargate(t *testing.T) {
	_, tmpl := stack(t)
	tmpl.HasResourceProperties(jsii.String("AWS::ECS::TaskDefinition"), map[string]any{
		"RequiresCompatibilities": []string{"FARGATE"},
		"RuntimePlatform":         map[string]any{"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
		"ContainerDefinitions": assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{
			"Secrets": assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{"Name": "FERRY_ROUTER_TOKEN_SECRET"})}),
		})}),
	})
}

func TestEveryLogGroupHasRetention(t *testing.T) {
	_, tmpl := stack(t)
	groups := resources(tmpl, "AWS::Logs::LogGroup")
	if len(groups) < 3 {
		t.Fatalf("%d log groups, want router, function and flow logs", len(groups))
	}
	for id, g := range groups {
		props, _ := g["Properties"].(map[string]any)
		if props["RetentionInDays"] != float64(30) {
			t.Errorf("log group %s retention = %v, want 30 days", id, props["RetentionInDays"])
		}
	}
}

func TestRouterMayInvokeExactlyTheFerryFunctions(t *testing.T) {
	_, tmpl := stack(t)
	fns := resources(tmpl, "AWS::Lambda::Function")
	var fnID string
	for id := range fns {
		fnID = id
	}
	invokes := 0
	for id, p := range resources(tmpl, "AWS::IAM::Policy") {
		doc, _ := json.Marshal(p["Properties"].(map[string]any)["PolicyDocument"])
		var pd struct{ Statement []map[string]any }
		json.Unmarshal(doc, &pd)
		for _, st := range pd.Statement {
			if !strings.Contains(fmt.Sprint(st["Action"]), "lambda:InvokeFunction") {
				continue
			}
			invokes++
			res, _ := json.Marshal(st["Resource"])
			if strings.Contains(string(res), `"*"`) || !strings.Contains(string(res), fnID) {
				t.Errorf("policy %s: lambda:InvokeFunction on %s, want only function %s", id, res, fnID)
			}
		}
	}
	if invokes != 1 {
		t.Errorf("%d statements allow lambda:InvokeFunction, want exactly the router's one", invokes)
	}
}

// The router's task role allows exactly what ferry-router calls
// (internal/permissions, itself held to the code), and each action only
// where it is needed.
func TestRouterRoleAllowsExactlyWhatTheRouterCalls(t *testing.T) {
	for mode, synth := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			st, tmpl := synth(t)
			want := permissions.Router()
			if mode == "public tunnel" {
				want = append(want, permissions.RouterPublicTunnel()...)
			}
			routerRoleAllows(t, st, tmpl, want)
		})
	}
}

func routerRoleAllows(t *testing.T, st *ferrycdk.FerryStack, tmpl assertions.Template, want []string) {
	role := *st.Stack.GetLogicalId(st.Router.TaskRole.Node().DefaultChild().(awscdk.CfnElement))
	fnArn := *st.Stack.GetLogicalId(st.Sample.Function.Node().DefaultChild().(awscdk.CfnElement))
	allowed := map[string]bool{}
	for id, p := range resources(tmpl, "AWS::IAM::Policy") {
		props := p["Properties"].(map[string]any)
		if !strings.Contains(fmt.Sprint(props["Roles"]), role) {
			continue
		}
		doc, _ := json.Marshal(props["PolicyDocument"])
		var pd struct{ Statement []map[string]any }
		json.Unmarshal(doc, &pd)
		for _, stmt := range pd.Statement {
			if stmt["Effect"] != "Allow" {
				continue
			}
			var actions []string
			switch a := stmt["Action"].(type) {
			case string:
				actions = []string{a}
			case []any:
				for _, x := range a {
					actions = append(actions, fmt.Sprint(x))
				}
			}
			res, _ := json.Marshal(stmt["Resource"])
			for _, a := range actions {
				allowed[a] = true
				switch a {
				case "lambda:InvokeFunction":
					if strings.Contains(string(res), `"*"`) || !strings.Contains(string(res), fnArn) {
						t.Errorf("policy %s: %s on %s, want the ferry function only", id, a, res)
					}
				case "cloudwatch:PutMetricData":
					if !strings.Contains(fmt.Sprint(stmt["Condition"]), "cloudwatch:namespace:Ferry") {
						t.Errorf("policy %s: %s without the Ferry namespace condition: %v", id, a, stmt["Condition"])
					}
				}
			}
		}
	}
	var got []string
	for a := range allowed {
		got = append(got, a)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the router's task role allows %v; ferry-router calls %v", got, want)
	}
}

func TestTunnelPathIsTheOnlyWayIn(t *testing.T) {
	_, tmpl := stack(t)
	// Every rule opening the tunnel port names a security group as source:
	// function -> router tasks. None is open to an address range.
	n := 0
	for id, r := range resources(tmpl, "AWS::EC2::SecurityGroupIngress") {
		p := r["Properties"].(map[string]any)
		if p["FromPort"] != float64(ferrycdk.TunnelPort) {
			continue
		}
		n++
		if p["SourceSecurityGroupId"] == nil || p["CidrIp"] != nil {
			t.Errorf("ingress %s to the tunnel port from %v, want a security group", id, p)
		}
	}
	if n != 1 {
		t.Errorf("%d ingress rules on the tunnel port, want 1 (the sample function to the router tasks)", n)
	}
	for id, sg := range resources(tmpl, "AWS::EC2::SecurityGroup") {
		p := sg["Properties"].(map[string]any)
		b, _ := json.Marshal(p["SecurityGroupIngress"])
		if strings.Contains(string(b), fmt.Sprint(ferrycdk.TunnelPort)) && strings.Contains(string(b), "0.0.0.0/0") {
			t.Errorf("security group %s opens the tunnel port to the internet: %s", id, b)
		}
	}
}

func TestRouterAdvertisesItsOwnTaskAddress(t *testing.T) {
	for mode, advertise := range map[string]string{"private tunnel": "ecs", "public tunnel": "ecs-public"} {
		t.Run(mode, func(t *testing.T) {
			_, tmpl := modes(t)[mode](t)
			tmpl.HasResourceProperties(jsii.String("AWS::ECS::TaskDefinition"), map[string]any{
				"ContainerDefinitions": assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{
					"Environment": assertions.Match_ArrayWith(&[]any{map[string]any{"Name": "FERRY_ROUTER_ADVERTISE", "Value": advertise}}),
				})}),
			})
			tmpl.HasOutput(jsii.String("TunnelMode"), map[string]any{"Value": strings.TrimSuffix(mode, " tunnel")})
		})
	}
}

func TestTwoRegions(t *testing.T) {
	app := newApp(map[string]any{ferrycdk.CtxRegions: "us-east-1, eu-west-1"})
	stacks, err := ferrycdk.NewRegionStacks(app, testbin.ModuleRoot())
	if err != nil {
		t.Fatal(err)
	}
	if len(stacks) != 2 {
		t.Fatalf("%d stacks, want 2", len(stacks))
	}
	for i, want := range []string{"us-east-1", "eu-west-1"} {
		if got := *stacks[i].Region(); got != want || *stacks[i].StackName() != "Ferry-"+want {
			t.Errorf("stack %d: %s in %s, want Ferry-%s in %s", i, *stacks[i].StackName(), got, want, want)
		}
	}
}

func TestBadContextIsAClearError(t *testing.T) {
	for key, value := range map[string]string{ferrycdk.CtxNatGateways: "lots", ferrycdk.CtxSampleArch: "sparc", ferrycdk.CtxTunnel: "open", ferrycdk.CtxGlobal: "anycast",
		ferrycdk.CtxCertificateArn: "my-cert"} {
		_, err := ferrycdk.NewRegionStacks(newApp(map[string]any{key: value}), testbin.ModuleRoot())
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%s: error = %v, want one naming %s", key, value, err, key)
		}
	}
}

// TestLocalContext is what make local-deploy synthesizes: a built router
// image (no Docker build) and the sample for x86_64 with that layer.
func TestLocalContext(t *testing.T) {
	stacks, err := ferrycdk.NewRegionStacks(newApp(map[string]any{
		ferrycdk.CtxRouterImage: "ferry-router:local", ferrycdk.CtxSampleArch: "x86_64"}), testbin.ModuleRoot())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := assertions.Template_FromStack(stacks[0].Stack, nil)
	for id, td := range resources(tmpl, "AWS::ECS::TaskDefinition") {
		b, _ := json.Marshal(td["Properties"].(map[string]any)["ContainerDefinitions"])
		if !strings.Contains(string(b), `"Image":"ferry-router:local"`) {
			t.Errorf("task definition %s: containers %s, want image ferry-router:local", id, b)
		}
	}
	fns := resources(tmpl, "AWS::Lambda::Function")
	if len(fns) != 1 {
		t.Fatalf("%d functions, want 1", len(fns))
	}
	for id, fn := range fns {
		props := fn["Properties"].(map[string]any)
		b, _ := json.Marshal(props["Layers"])
		if arch, _ := json.Marshal(props["Architectures"]); string(arch) != `["x86_64"]` || !strings.Contains(string(b), "FerryLayerX8664") {
			t.Errorf("function %s: architectures %s, layers %s; want x86_64 with the x86_64 layer", id, arch, b)
		}
	}
}

// TestSecurityGroupDescriptionsAreValid holds descriptions to the pattern
// CloudFormation enforces at deploy time (an apostrophe fails the stack).
func TestSecurityGroupDescriptionsAreValid(t *testing.T) {
	_, tmpl := stack(t)
	valid := regexp.MustCompile(`^([a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*])*$`)
	for id, sg := range resources(tmpl, "AWS::EC2::SecurityGroup") {
		d, _ := sg["Properties"].(map[string]any)["GroupDescription"].(string)
		if !valid.MatchString(d) {
			t.Errorf("security group %s description %q has characters CloudFormation rejects", id, d)
		}
	}
}

// TestRouterTasksFindEachOther follows the path by which router tasks
// share functions: ECS registers each task in the Cloud Map service that
// FERRY_ROUTER_PEERS names, the role may list exactly that service, and
// the peer port the router listens on is the one the task maps (the
// security group path is in TestNetworkPaths).
func TestRouterTasksFindEachOther(t *testing.T) {
	_, tmpl := stack(t)
	namespaces := resources(tmpl, "AWS::ServiceDiscovery::PrivateDnsNamespace")
	services := resources(tmpl, "AWS::ServiceDiscovery::Service")
	svcID := only(t, tmpl, "AWS::ECS::Service")
	ecsSvc := props(resources(tmpl, "AWS::ECS::Service")[svcID])
	regs := asMaps(ecsSvc["ServiceRegistries"])
	if len(regs) != 1 {
		t.Fatalf("the router service registers in %d Cloud Map services, want 1", len(regs))
	}
	cm := props(services[ref(regs[0]["RegistryArn"])])
	if cm == nil {
		t.Fatalf("the router service registers in %v, not a Cloud Map service of the stack", regs[0])
	}
	ns := props(namespaces[ref(cm["NamespaceId"])])
	if ns == nil {
		t.Fatalf("Cloud Map service %v is in no namespace of the stack", cm)
	}
	env := map[string]string{}
	var ports []float64
	for _, td := range resources(tmpl, "AWS::ECS::TaskDefinition") {
		for _, c := range asMaps(props(td)["ContainerDefinitions"]) {
			for _, kv := range asMaps(c["Environment"]) {
				env[fmt.Sprint(kv["Name"])] = fmt.Sprint(kv["Value"])
			}
			for _, pm := range asMaps(c["PortMappings"]) {
				ports = append(ports, pm["ContainerPort"].(float64))
			}
		}
	}
	want := fmt.Sprintf("cloudmap:%s/%s", ns["Name"], cm["Name"])
	if env["FERRY_ROUTER_PEERS"] != want {
		t.Errorf("FERRY_ROUTER_PEERS = %q; the tasks register in %s", env["FERRY_ROUTER_PEERS"], want)
	}
	if v := env["FERRY_ROUTER_UNREADY_AFTER"]; v != "" {
		// ECS would replace the tasks of the only region while its Lambda
		// refuses, and no other region could take the traffic.
		t.Errorf("a lone region's routers go unready on Lambda failures (FERRY_ROUTER_UNREADY_AFTER=%s)", v)
	}
	if env["FERRY_ROUTER_PEER_LISTEN"] != fmt.Sprintf(":%d", ferrycdk.PeerPort) || !slices.Contains(ports, float64(ferrycdk.PeerPort)) {
		t.Errorf("peer port: listen %q, container ports %v; want %d both", env["FERRY_ROUTER_PEER_LISTEN"], ports, ferrycdk.PeerPort)
	}
	// The role lists exactly this service.
	found := false
	for _, p := range resources(tmpl, "AWS::IAM::Policy") {
		b, _ := json.Marshal(props(p)["PolicyDocument"])
		if strings.Contains(string(b), "servicediscovery:DiscoverInstances") {
			found = true
			if !strings.Contains(string(b), fmt.Sprintf(`"servicediscovery:NamespaceName":%q`, ns["Name"])) ||
				!strings.Contains(string(b), fmt.Sprintf(`"servicediscovery:ServiceName":%q`, cm["Name"])) {
				t.Errorf("DiscoverInstances is not held to %s: %s", want, b)
			}
		}
	}
	if !found {
		t.Error("no policy lets the router tasks list their peers")
	}
}

// TestCertificatePerRegion: ACM certificates are regional; each region's
// ALB takes the one in its region, and a region without one is an error.
func TestCertificatePerRegion(t *testing.T) {
	east, west := "arn:aws:acm:us-east-1:123456789012:certificate/e", "arn:aws:acm:eu-west-1:123456789012:certificate/w"
	stacks, err := ferrycdk.NewRegionStacks(newApp(map[string]any{ferrycdk.CtxRegions: "us-east-1,eu-west-1",
		ferrycdk.CtxCertificateArn: east + "," + west}), testbin.ModuleRoot())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range stacks {
		want := map[string]string{"us-east-1": east, "eu-west-1": west}[*st.Region()]
		assertions.Template_FromStack(st.Stack, nil).HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::Listener"), map[string]any{
			"Port": 443, "Certificates": []any{map[string]any{"CertificateArn": want}},
		})
	}
	for certs, want := range map[string]string{
		east:              "names no certificate in eu-west-1",
		east + "," + east: "two certificates in us-east-1",
		east + "," + west + ",arn:aws:acm:ap-south-1:123456789012:certificate/a": "ap-south-1, which is not among the regions",
	} {
		_, err = ferrycdk.NewRegionStacks(newApp(map[string]any{ferrycdk.CtxRegions: "us-east-1,eu-west-1", ferrycdk.CtxCertificateArn: certs}),
			testbin.ModuleRoot())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("certificates %s: %v, want an error saying %q", certs, err, want)
		}
	}
}

// TestLoneRegionDoesNotFailOver: a global accelerator in front of one
// region has nowhere to move traffic: its routers never go unready for
// Lambda's failures (ECS would only replace them).
func TestLoneRegionDoesNotFailOver(t *testing.T) {
	stacks, err := ferrycdk.NewRegionStacks(newApp(map[string]any{ferrycdk.CtxGlobal: "accelerator"}), testbin.ModuleRoot())
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range resources(assertions.Template_FromStack(stacks[0].Stack, nil), "AWS::ECS::TaskDefinition") {
		if b, _ := json.Marshal(td); strings.Contains(string(b), "FERRY_ROUTER_UNREADY_AFTER") {
			t.Error("a lone region's routers go unready on Lambda failures")
		}
	}
}

// TestGlobalStack: with -c global=accelerator, one accelerator in front of
// both regions: TCP 80 to an endpoint group in each region whose endpoint
// is that region's load balancer, client addresses kept; the load
// balancers' targets are healthy only while /readyz says ready, which is
// what moves traffic off a region that cannot launch instances.
func TestGlobalStack(t *testing.T) {
	app := newApp(map[string]any{ferrycdk.CtxRegions: "us-east-1, eu-west-1", ferrycdk.CtxGlobal: "accelerator"})
	stacks, err := ferrycdk.NewRegionStacks(app, testbin.ModuleRoot())
	if err != nil {
		t.Fatal(err)
	}
	global, ok := app.Node().TryFindChild(jsii.String("Ferry-global")).(awscdk.Stack)
	if !ok {
		t.Fatal("no Ferry-global stack")
	}
	if *global.Region() != ferrycdk.GlobalRegion {
		t.Errorf("the global stack is in %s, want %s", *global.Region(), ferrycdk.GlobalRegion)
	}
	tmpl := assertions.Template_FromStack(global, nil)
	tmpl.ResourceCountIs(jsii.String("AWS::GlobalAccelerator::Accelerator"), jsii.Number(1))
	tmpl.HasResourceProperties(jsii.String("AWS::GlobalAccelerator::Listener"), map[string]any{
		"Protocol": "TCP", "PortRanges": []any{map[string]any{"FromPort": 80, "ToPort": 80}},
	})
	groups := resources(tmpl, "AWS::GlobalAccelerator::EndpointGroup")
	byRegion := map[string]map[string]any{}
	for _, g := range groups {
		byRegion[fmt.Sprint(props(g)["EndpointGroupRegion"])] = props(g)
	}
	for _, st := range stacks {
		region := *st.Region()
		g := byRegion[region]
		if g == nil {
			t.Errorf("no endpoint group in %s: %v", region, byRegion)
			continue
		}
		eps := asMaps(g["EndpointConfigurations"])
		if len(eps) != 1 || eps[0]["ClientIPPreservationEnabled"] != true {
			t.Errorf("%s: endpoints %v, want one, client addresses kept", region, eps)
			continue
		}
		// The endpoint is read across regions from the region stack's
		// load balancer: its logical id is in the reference's name.
		alb := *st.GetLogicalId(st.Router.LoadBalancer.Node().DefaultChild().(awscdk.CfnElement))
		if b, _ := json.Marshal(eps[0]["EndpointId"]); !strings.Contains(string(b), alb) {
			t.Errorf("%s: endpoint %s is not the region's load balancer %s", region, b, alb)
		}
		// That load balancer's targets are healthy only while /readyz is,
		// which fails while the region's Lambda refuses invocations.
		rt := assertions.Template_FromStack(st.Stack, nil)
		rt.HasResourceProperties(jsii.String("AWS::ElasticLoadBalancingV2::TargetGroup"),
			map[string]any{"HealthCheckPath": "/readyz"})
		rt.HasResourceProperties(jsii.String("AWS::ECS::TaskDefinition"), map[string]any{
			"ContainerDefinitions": assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{
				"Environment": assertions.Match_ArrayWith(&[]any{map[string]any{"Name": "FERRY_ROUTER_UNREADY_AFTER", "Value": "30s"}}),
			})}),
		})
	}
	if len(groups) != len(stacks) {
		t.Errorf("%d endpoint groups for %d regions", len(groups), len(stacks))
	}
	tmpl.HasOutput(jsii.String("GlobalAddresses"), map[string]any{})
}

// TestDashboardShowsReplicas: the dashboard charts what the router tasks
// publish about sharing functions.
func TestDashboardShowsReplicas(t *testing.T) {
	_, tmpl := stack(t)
	for _, d := range resources(tmpl, "AWS::CloudWatch::Dashboard") {
		body, _ := json.Marshal(props(d)["DashboardBody"])
		for _, m := range []string{"ForwardedRequests", "RingSize", "Requests", "InvocationMs", "ActiveCpuMs", "IdleMs"} {
			if !strings.Contains(string(body), `\"`+m+`\"`) {
				t.Errorf("the dashboard does not chart %s", m)
			}
		}
	}
}
