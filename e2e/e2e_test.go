// Package e2e runs ferry end to end on a local AWS, the way a user would:
// make local-up, make local-deploy (cdk bootstrap + cdk deploy, then the
// deployed data plane), load through the router, ferry metrics, make
// local-destroy and make local-down. Every step goes through the Makefile
// and the real binaries; the checks go through the AWS SDK.
//
// With AWS_ENDPOINT_URL set (a LocalStack, say), the suite deploys there
// and starts no local AWS of its own. FERRY_E2E_LOAD sets the load's
// length (default 30s).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/ferryrun/ferry/internal/load"
	"github.com/ferryrun/ferry/internal/proctree"
	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/internal/review"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/localstack/dataplane"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
	"github.com/ferryrun/ferry/localstack/localrun"
)

const stack = "Ferry-us-east-1"

// env is one run's settings, handed to every make call.
type env struct {
	t        *testing.T
	vars     []string // make variables
	dir      string   // LOCAL_DIR
	dist     string   // DIST
	endpoint string   // what the Go SDK calls (no S3 here)
}

func (e *env) make(timeout time.Duration, targets ...string) string {
	e.t.Helper()
	out, err := e.run(timeout, targets...)
	if err != nil {
		e.t.Fatalf("make %s: %v\n%s", strings.Join(targets, " "), err, out)
	}
	return out
}

// run is make without failing the test.
func (e *env) run(timeout time.Duration, targets ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append(append([]string{"--no-print-directory"}, targets...), e.vars...)...)
	cmd.Dir = testbin.ModuleRoot()
	cmd.Env = append(os.Environ(), "CDK_DISABLE_VERSION_CHECK=1", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	e.t.Logf("make %s: %v in %s", strings.Join(targets, " "), errOr(err, "ok"), time.Since(start).Round(time.Millisecond))
	return out.String(), err
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

func (e *env) aws() aws.Config {
	return aws.Config{
		Region: "us-east-1", BaseEndpoint: aws.String(e.endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		}),
	}
}

func freeAddr(t *testing.T) string {
	a, err := localrun.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLocalAWS(t *testing.T) {
	loadFor := 30 * time.Second
	if v := os.Getenv("FERRY_E2E_LOAD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("FERRY_E2E_LOAD=%q: %v", v, err)
		}
		loadFor = d
	}
	tmp := t.TempDir()
	e := &env{t: t, dir: filepath.Join(tmp, "local"), dist: filepath.Join(tmp, "dist")}
	ingress := freeAddr(t)
	e.vars = []string{"LOCAL_DIR=" + e.dir, "DIST=" + e.dist, "LOCAL_INGRESS=" + ingress}
	ownAWS := os.Getenv("AWS_ENDPOINT_URL") == ""
	if ownAWS {
		_, port, _ := net.SplitHostPort(freeAddr(t))
		e.vars = append(e.vars, "LOCAL_PORT="+port)
		e.endpoint = "http://127.0.0.1:" + port
		e.make(time.Minute, "local-up")
		// Whatever fails below, nothing started here outlives the test.
		t.Cleanup(func() {
			if _, err := os.Stat(filepath.Join(e.dir, "moto.pid")); err == nil {
				e.make(time.Minute, "local-down")
			}
		})
	} else {
		e.endpoint = os.Getenv("AWS_ENDPOINT_URL")
		e.vars = append(e.vars, "LOCAL_ENDPOINT="+e.endpoint)
		t.Cleanup(func() {
			if _, err := os.Stat(filepath.Join(e.dir, "dataplane.json")); err == nil {
				e.make(time.Minute, "local-stop")
			}
		})
	}
	t.Logf("local AWS at %s", e.endpoint)
	cfg := e.aws()
	ctx := t.Context()

	// 1. Deploy, then find every resource through the AWS API.
	deployed := e.make(15*time.Minute, "local-deploy")
	outputs := stackOutputs(t, ctx, cfloud(cfg))
	fn := outputs["SampleFunctionName"]
	checkResources(t, ctx, cfg, outputs)
	st, err := dataplane.Load(e.dir)
	if err != nil {
		t.Fatal(err)
	}

	// 2. Load through the router into the deployed function.
	gen := send(t, st.ClientURL, 8, loadFor)
	t.Logf("load: %d requests in %v, %d failed, p50 %v, p99 %v", gen.requests, loadFor, gen.failed, gen.pct(0.5), gen.pct(0.99))
	if gen.failed != 0 {
		t.Errorf("%d of %d requests failed: %s", gen.failed, gen.requests, gen.firstErr)
	}
	emu := awaitIdle(t, st, fn)
	t.Logf("emulator: %d invocations, %d ms billed, %d sandboxes", emu.Invocations, emu.BilledMs, emu.SandboxesStarted)
	if emu.Invocations == 0 || float64(gen.requests)/float64(emu.Invocations) <= 1 {
		t.Errorf("%d requests in %d invocations: want more than one request per invocation", gen.requests, emu.Invocations)
	}

	// 3. The metrics, read back through the review command, match what the
	// load generator counted and what the emulator billed.
	rep := awaitMetrics(t, e, fn, gen.requests, emu.Invocations)
	if rep.Requests != gen.requests {
		t.Errorf("ferry metrics: %d requests, load generator sent %d", rep.Requests, gen.requests)
	}
	if rep.Invocations != emu.Invocations || rep.BilledMs != float64(emu.BilledMs) {
		t.Errorf("ferry metrics: %d invocations, %.0f ms billed; emulator: %d, %d ms; router warnings and errors:\n%s",
			rep.Invocations, rep.BilledMs, emu.Invocations, emu.BilledMs, routerWarnings(e))
	}
	// What one request per invocation would have billed, from the client's
	// own clock: each request's latency, rounded up to the millisecond.
	reference := 100 * (1 - float64(emu.BilledMs)/gen.singleMs)
	t.Logf("compute saved: ferry metrics %.1f%%; emulator billed vs client latencies %.1f%%", rep.SavedPercent, reference)
	if math.Abs(rep.SavedPercent-reference) > 5 {
		t.Errorf("compute saved %.1f%% (metrics) vs %.1f%% (emulator billed / client latencies): more than 5 points apart", rep.SavedPercent, reference)
	}
	// The CPU the bootstraps reported, as the router published it, holds
	// every request's 5 ms burn and agrees with what the emulator read
	// from the sandboxes' cgroups over the same invocations.
	emuCPUMs := float64(emu.CPUUs) / 1000
	t.Logf("active CPU: ferry metrics %.0f ms (%.1f%% of billed); emulator %.0f ms; the app burned %d ms",
		rep.CPUMs, rep.CPUPercent, emuCPUMs, 5*gen.requests)
	if rep.CPUMs < float64(5*(gen.requests-gen.failed)) {
		t.Errorf("ferry metrics: %.0f CPU ms, less than the app's %d requests burned at 5 ms each", rep.CPUMs, gen.requests-gen.failed)
	}
	// The emulator's reading also holds the runtime's calls around each
	// invocation, which the bootstrap's cannot: a couple of ms at most.
	if emuCPUMs > 0 && math.Abs(rep.CPUMs-emuCPUMs) > 0.1*emuCPUMs+2*float64(emu.Invocations) {
		t.Errorf("ferry metrics: %.0f CPU ms; the emulator read %.0f ms from the sandboxes' cgroups over %d invocations: too far apart",
			rep.CPUMs, emuCPUMs, emu.Invocations)
	}
	chart := filepath.Join(tmp, "metrics.png")
	table := e.make(time.Minute, "metrics", "METRICS_FLAGS=-function "+fn+" -since 15m -png "+chart)
	t.Logf("ferry metrics:\n%s", table)
	if !strings.Contains(table, "compute saved") || !strings.Contains(table, "of billed)") || !strings.Contains(table, strconv.FormatInt(gen.requests, 10)) {
		t.Errorf("table lacks the figures:\n%s", table)
	}
	checkPNG(t, chart)
	if ownAWS {
		// The review command local-deploy printed works as printed, with
		// no AWS_* variables: ferry finds the local AWS by itself.
		out := asUser(t, printed(t, deployed, "review metrics: "))
		if !strings.Contains(out, "using the local AWS") || !strings.Contains(out, strconv.FormatInt(gen.requests, 10)) {
			t.Errorf("the printed review command said:\n%s\nwant the local AWS found and %d requests", out, gen.requests)
		}
	}

	// 4. A route added with ferry routes serves within 5 s, with no router
	// restart; removed, it stops. A host route to a function that does not
	// exist shows which route answered: its requests fail naming it, where
	// the sample's catch-all route answers them from the app.
	if ownAWS {
		const missing = "ferry-e2e-missing"
		ferryCLI := filepath.Join(e.dist, "ferry")
		asUser(t, ferryCLI+" routes add -function "+missing+" -host missing.example -state "+e.dir)
		awaitRoute(t, st.ClientURL, "missing.example", "/healthz", func(status int, body string) bool {
			return status >= 500 && strings.Contains(body, missing)
		})
		out := asUser(t, ferryCLI+" routes list -state "+e.dir)
		if !strings.Contains(out, missing) {
			t.Errorf("ferry routes list:\n%s\nwant the added route", out)
		}
		asUser(t, ferryCLI+" routes remove -function "+missing+" -host missing.example -state "+e.dir)
		awaitRoute(t, st.ClientURL, "missing.example", "/healthz", func(status int, _ string) bool { return status == http.StatusOK })

		// 5. A function created apart from the stack, put behind it with
		// ferry attach, serves through the router; ferry detach leaves
		// nothing of ferry on it or around it.
		if restarted := attachDetach(t, e, cfg, outputs); restarted.ClientURL != "" {
			st = restarted
		}
	}

	// 6. Tear down; nothing ferry started may be left running.
	e.make(5*time.Minute, "local-destroy")
	if ownAWS {
		e.make(time.Minute, "local-down")
	}
	if _, err := cfloud(cfg).DescribeStacks(context.Background(), &cloudformation.DescribeStacksInput{StackName: aws.String(stack)}); ownAWS {
		// The local AWS is gone with local-down: nothing answers.
		if err == nil {
			t.Errorf("the local AWS still answers after local-down")
		}
	} else if err == nil {
		t.Errorf("stack %s still exists after local-destroy", stack)
	}
	if left := processesUnder(tmp); len(left) > 0 {
		t.Errorf("still running after teardown: %s", strings.Join(left, "; "))
	}
	for _, addr := range []string{ingress, strings.TrimPrefix(st.LambdaURL, "http://"), strings.TrimPrefix(st.AdminURL, "http://")} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after teardown", addr)
		}
	}
}

func cfloud(cfg aws.Config) *cloudformation.Client { return cloudformation.NewFromConfig(cfg) }

func stackOutputs(t *testing.T, ctx context.Context, cf *cloudformation.Client) map[string]string {
	out, err := cf.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: aws.String(stack)})
	if err != nil {
		t.Fatal(err)
	}
	s := out.Stacks[0]
	if s.StackStatus != "CREATE_COMPLETE" && s.StackStatus != "UPDATE_COMPLETE" {
		t.Fatalf("stack %s is %s", stack, s.StackStatus)
	}
	m := map[string]string{}
	for _, o := range s.Outputs {
		m[aws.ToString(o.OutputKey)] = aws.ToString(o.OutputValue)
	}
	for _, k := range []string{"ClientUrl", "SampleFunctionName", "LayerArnArm64", "LayerArnX8664", "DashboardUrl"} {
		if m[k] == "" {
			t.Fatalf("stack output %s missing: %v", k, m)
		}
	}
	return m
}

// checkResources finds each part of the deployment through its own API.
func checkResources(t *testing.T, ctx context.Context, cfg aws.Config, outputs map[string]string) {
	t.Helper()
	fn := outputs["SampleFunctionName"]

	// The function, with ferry's layer for its architecture.
	got, err := lambda.NewFromConfig(cfg).GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: &fn})
	if err != nil {
		t.Fatalf("function %s: %v", fn, err)
	}
	c := got.Configuration
	wantLayer := outputs["LayerArnX8664"]
	if len(c.Architectures) > 0 && c.Architectures[0] == "arm64" {
		wantLayer = outputs["LayerArnArm64"]
	}
	if len(c.Layers) != 1 || aws.ToString(c.Layers[0].Arn) != wantLayer {
		t.Errorf("function layers = %+v, want exactly %s", c.Layers, wantLayer)
	}
	if string(c.Runtime) != "provided.al2023" || c.Environment == nil || c.Environment.Variables["FERRY_APP_CMD"] == "" {
		t.Errorf("function runtime %s, environment %+v: want provided.al2023 with FERRY_APP_CMD", c.Runtime, c.Environment)
	}

	// The router service, routing to the function.
	e := ecs.NewFromConfig(cfg)
	clusters, err := e.ListClusters(ctx, &ecs.ListClustersInput{})
	if err != nil || len(clusters.ClusterArns) != 1 {
		t.Fatalf("ECS clusters = %v, %v; want one", clusters, err)
	}
	svcs, err := e.ListServices(ctx, &ecs.ListServicesInput{Cluster: &clusters.ClusterArns[0]})
	if err != nil || len(svcs.ServiceArns) != 1 {
		t.Fatalf("ECS services = %v, %v; want one", svcs, err)
	}
	desc, err := e.DescribeServices(ctx, &ecs.DescribeServicesInput{Cluster: &clusters.ClusterArns[0], Services: svcs.ServiceArns})
	if err != nil || len(desc.Services) != 1 {
		t.Fatalf("DescribeServices: %v", err)
	}
	if s := desc.Services[0]; s.LaunchType != "FARGATE" || s.DesiredCount != 1 {
		t.Errorf("router service: launch type %s, desired %d; want FARGATE, 1", s.LaunchType, s.DesiredCount)
	}
	td, err := e.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: desc.Services[0].TaskDefinition})
	if err != nil {
		t.Fatal(err)
	}
	var routes string
	for _, kv := range td.TaskDefinition.ContainerDefinitions[0].Environment {
		if aws.ToString(kv.Name) == "FERRY_ROUTER_ROUTES" {
			routes = aws.ToString(kv.Value)
		}
	}
	if !strings.HasPrefix(routes, fn+"=") {
		t.Errorf("router routes %q, want the function %s", routes, fn)
	}

	// The load balancer behind ClientUrl, health-checking /readyz.
	lb := elb.NewFromConfig(cfg)
	lbs, err := lb.DescribeLoadBalancers(ctx, &elb.DescribeLoadBalancersInput{})
	if err != nil || len(lbs.LoadBalancers) != 1 {
		t.Fatalf("load balancers = %v, %v; want one", lbs, err)
	}
	if dns := aws.ToString(lbs.LoadBalancers[0].DNSName); !strings.Contains(outputs["ClientUrl"], dns) {
		t.Errorf("ClientUrl %s is not the load balancer %s", outputs["ClientUrl"], dns)
	}
	tgs, err := lb.DescribeTargetGroups(ctx, &elb.DescribeTargetGroupsInput{})
	if err != nil || len(tgs.TargetGroups) != 1 || aws.ToString(tgs.TargetGroups[0].HealthCheckPath) != "/readyz" {
		t.Errorf("target groups = %+v, %v; want one checking /readyz", tgs, err)
	}

	// The tunnel secret.
	sm := secretsmanager.NewFromConfig(cfg)
	secrets, err := sm.ListSecrets(ctx, &secretsmanager.ListSecretsInput{})
	if err != nil || len(secrets.SecretList) != 1 {
		t.Fatalf("secrets = %v, %v; want one", secrets, err)
	}
	v, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: secrets.SecretList[0].ARN})
	if err != nil || len(aws.ToString(v.SecretString)) != 64 {
		t.Errorf("tunnel secret: %d characters, %v; want 64", len(aws.ToString(v.SecretString)), err)
	}

	// The dashboard and the alarms.
	cw := cloudwatch.NewFromConfig(cfg)
	name := outputs["DashboardUrl"][strings.LastIndex(outputs["DashboardUrl"], "name=")+len("name="):]
	dash, err := cw.GetDashboard(ctx, &cloudwatch.GetDashboardInput{DashboardName: &name})
	if err != nil {
		t.Errorf("dashboard %s: %v", name, err)
	} else if body := aws.ToString(dash.DashboardBody); !strings.Contains(body, "InvocationMs") || !strings.Contains(body, "RequestMs") || !strings.Contains(body, "ActiveCpuMs") {
		t.Errorf("dashboard %s charts no compute saved (InvocationMs over RequestMs) or no CPU (ActiveCpuMs)", name)
	}
	alarms, err := cw.DescribeAlarms(ctx, &cloudwatch.DescribeAlarmsInput{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range alarms.MetricAlarms {
		names = append(names, aws.ToString(a.AlarmName))
	}
	for _, want := range []string{"Throttles", "LaunchFailures", "Router5xx", "UnhealthyRouters"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("alarms %v: none for %s", names, want)
		}
	}
}

type loadResult struct {
	requests, failed int64
	singleMs         float64 // sum of latencies, each rounded up to 1 ms
	latencies        []time.Duration
	firstErr         string
}

func (l *loadResult) pct(p float64) time.Duration { return quantile.Of(l.latencies, p) }

// send sends the I/O-heavy sample request from c clients for d
// (internal/load's closed loop). One of them opens a connection per
// request and closes it as soon as it has the answer, as many clients do:
// the router must count those requests too.
func send(t *testing.T, url string, c int, d time.Duration) *loadResult {
	target := load.Target{Method: "GET", URL: url + "/work?cpu_ms=5&wait_ms=100"}
	var kept, oneShot []load.Hit
	var wg sync.WaitGroup
	wg.Go(func() { kept = load.Closed(t.Context(), target, c-1, d, load.Options{Timeout: 30 * time.Second}) })
	wg.Go(func() {
		oneShot = load.Closed(t.Context(), target, 1, d, load.Options{Timeout: 30 * time.Second, NoKeepAlive: true})
	})
	wg.Wait()
	res := &loadResult{}
	for _, h := range append(kept, oneShot...) {
		res.requests++
		if h.Err != "" || h.Code != http.StatusOK {
			res.failed++
			if res.firstErr == "" {
				res.firstErr = fmt.Sprintf("%d %s", h.Code, h.Err)
			}
		}
		res.latencies = append(res.latencies, h.Took)
		res.singleMs += math.Ceil(float64(h.Took) / float64(time.Millisecond))
	}
	return res
}

// awaitIdle waits until every invocation has ended (instances linger a
// moment after their last stream) and returns the emulator's totals.
func awaitIdle(t *testing.T, st dataplane.State, fn string) lambdaemu.Stats {
	t.Helper()
	if err := localrun.Quiesce(t.Context(), st.AdminURL, st.LambdaURL, fn); err != nil {
		t.Fatal(err)
	}
	var stats map[string]lambdaemu.Stats
	getJSON(t, st.LambdaURL+"/_emulator/stats", &stats)
	return stats[fn]
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// awaitMetrics runs ferry metrics -json until the router's last interval
// has been published (requests and invocations both accounted for).
func awaitMetrics(t *testing.T, e *env, fn string, requests, invocations int64) review.Report {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// Until the first interval is published, ferry metrics says there
		// are no requests, and fails.
		out, err := e.run(time.Minute, "metrics", "METRICS_FLAGS=-function "+fn+" -since 15m -json")
		var rep review.Report
		if i := strings.Index(out, "{"); err == nil && i >= 0 && json.Unmarshal([]byte(out[i:]), &rep) == nil &&
			rep.Requests >= requests && rep.Invocations >= invocations {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry metrics did not reach %d requests, %d invocations within 2m; last:\n%s\nrouter warnings and errors:\n%s",
				requests, invocations, out, routerWarnings(e))
		}
		time.Sleep(3 * time.Second)
	}
}

// printed is the rest of the line of out that starts with prefix.
func printed(t *testing.T, out, prefix string) string {
	t.Helper()
	for l := range strings.SplitSeq(out, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return rest
		}
	}
	t.Fatalf("no line %q in:\n%s", prefix, out)
	return ""
}

// asUser runs a command line as a user would type it: without the AWS_*
// variables make sets, or any AWS configuration of this machine's.
func asUser(t *testing.T, line string) string {
	t.Helper()
	args := strings.Fields(line)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s: %v\n%s", line, err, b)
	}
	t.Logf("%s:\n%s", line, b)
	return string(b)
}

// awaitRoute waits up to 5 s for GET path with host to answer as ok says.
func awaitRoute(t *testing.T, clientURL, host, path string, ok func(status int, body string) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", clientURL+path, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		var status int
		var body []byte
		if err == nil {
			status = resp.StatusCode
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if ok(status, string(body)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s for host %s: %d %q %v, not what the routes should make it within 5s", path, host, status, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// routerWarnings is the router's own word on what it published, or
// failed to.
func routerWarnings(e *env) string {
	logs, _ := os.ReadFile(filepath.Join(e.dir, "ferry-router.log"))
	var warn []string
	for l := range strings.SplitSeq(string(logs), "\n") {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			warn = append(warn, l)
		}
	}
	return strings.Join(warn, "\n")
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("chart: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart %s is no PNG: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 300 {
		t.Errorf("chart is %dx%d, want a readable size", b.Dx(), b.Dy())
	}
}

// processesUnder lists live processes whose command line or executable
// lies under dir: the emulator, the router, sandboxes and their apps all
// run from files the suite put there.
func processesUnder(dir string) []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if pid, err := strconv.Atoi(filepath.Base(p)); err != nil || !proctree.Alive(pid) {
			continue // exited (perhaps not yet reaped)
		}
		cmdline, _ := os.ReadFile(p + "/cmdline")
		exe, _ := os.Readlink(p + "/exe")
		if strings.Contains(string(cmdline), dir) || strings.HasPrefix(exe, dir) {
			left = append(left, filepath.Base(p)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return left
}
