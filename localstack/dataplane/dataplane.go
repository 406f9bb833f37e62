// Package dataplane runs, on this machine, what AWS would run for a ferry
// stack deployed to a local AWS: the stack's Lambda functions, and those
// its routes parameter names (ferry attach), under the Lambda emulator,
// with the code and layers deployed, and
// ferry-router configured from the stack's ECS task definition and its
// secret, as the Fargate task would be.
//
// Everything is read back from the local AWS through its APIs
// (CloudFormation, Lambda, S3, ECS, Secrets Manager, SSM), never from the CDK
// app's source, so the data plane runs exactly what was deployed. The
// processes it starts are recorded in pid files in the state directory;
// Stop ends exactly those.
package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	cftypes "github.com/aws/aws-sdk-go-v2/service/cloudformation/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ferryrun/ferry/internal/lambdaarn"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
	"github.com/ferryrun/ferry/localstack/localrun"
	"github.com/ferryrun/ferry/router/config"
)

// Options configure Start.
type Options struct {
	Stack    string // the deployed stack's name, e.g. Ferry-us-east-1
	StateDir string // code, config, logs and pid files go here
	BinDir   string // holds lambda-emulator and ferry-router
	// Endpoint is the local AWS the router publishes metrics to, and
	// Region the stack's region.
	Endpoint, Region string
	// Ingress is the router's client address; if empty, 127.0.0.1:8080.
	Ingress string
	// MetricsInterval is the router's FERRY_ROUTER_METRICS_INTERVAL; if
	// zero, 10s (the deployed default, 60s, is long to wait for locally).
	MetricsInterval time.Duration
	// Concurrency is each function's concurrent invocation limit in the
	// emulator; if zero, 50.
	Concurrency int
	Log         io.Writer // progress lines; if nil, discarded
}

// State is what Start started, saved as StateDir/dataplane.json.
type State struct {
	Stack     string   `json:"stack"`
	ClientURL string   `json:"client_url"` // the router's ingress
	AdminURL  string   `json:"admin_url"`
	LambdaURL string   `json:"lambda_url"` // the emulator's Invoke API
	Functions []string `json:"functions"`
	// Skipped lists template resources the local AWS did not create.
	Skipped []string `json:"skipped,omitempty"`
}

// Clients are the local AWS's APIs Start reads.
type Clients struct {
	CloudFormation *cloudformation.Client
	Lambda         *lambda.Client
	S3             *s3.Client
	ECS            *ecs.Client
	SecretsManager *secretsmanager.Client
	SSM            *ssm.Client
}

// NewClients makes the clients from one AWS configuration (endpoint,
// region and credentials from the environment, as for any AWS tool).
func NewClients(cfg aws.Config) Clients {
	return Clients{
		CloudFormation: cloudformation.NewFromConfig(cfg),
		Lambda:         lambda.NewFromConfig(cfg),
		S3:             s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }),
		ECS:            ecs.NewFromConfig(cfg),
		SecretsManager: secretsmanager.NewFromConfig(cfg),
		SSM:            ssm.NewFromConfig(cfg),
	}
}

// The state file, and the pid files localrun.Plane writes for detached
// processes.
const (
	stateFile   = "dataplane.json"
	emulatorPid = "lambda-emulator.pid"
	routerPid   = "ferry-router.pid"
)

// Start reads the stack from the local AWS and starts the emulator and
// the router. It fails if a data plane from StateDir still runs.
func Start(ctx context.Context, c Clients, o Options) (State, error) {
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	if o.Ingress == "" {
		o.Ingress = "127.0.0.1:8080"
	}
	if o.MetricsInterval == 0 {
		o.MetricsInterval = 10 * time.Second
	}
	if o.Concurrency == 0 {
		o.Concurrency = 50
	}
	for _, p := range []string{emulatorPid, routerPid} {
		if pid, ok := running(filepath.Join(o.StateDir, p)); ok {
			return State{}, fmt.Errorf("a local data plane already runs (pid %d from %s): stop it first (make local-stop)", pid, filepath.Join(o.StateDir, p))
		}
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return State{}, err
	}
	st := State{Stack: o.Stack}

	stacks, err := c.CloudFormation.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: &o.Stack})
	if err != nil {
		return st, fmt.Errorf("stack %s: %w (deploy it first: make local-deploy)", o.Stack, err)
	}
	if s := stacks.Stacks[0].StackStatus; s != cftypes.StackStatusCreateComplete && s != cftypes.StackStatusUpdateComplete {
		return st, fmt.Errorf("stack %s is %s, not deployed", o.Stack, s)
	}
	// arn:aws:cloudformation:<region>:<account>:stack/<name>/<id>
	arn := strings.Split(aws.ToString(stacks.Stacks[0].StackId), ":")
	if len(arn) < 6 {
		return st, fmt.Errorf("stack %s: unexpected id %q", o.Stack, aws.ToString(stacks.Stacks[0].StackId))
	}
	pseudo := strings.NewReplacer("${AWS::AccountId}", arn[4], "${AWS::Region}", arn[3],
		"${AWS::Partition}", arn[1], "${AWS::URLSuffix}", "amazonaws.com")
	tmpl, err := template(ctx, c.CloudFormation, o.Stack)
	if err != nil {
		return st, err
	}
	res, err := resources(ctx, c.CloudFormation, o.Stack)
	if err != nil {
		return st, err
	}
	for _, id := range slices.Sorted(maps.Keys(tmpl.Resources)) {
		if _, ok := res[id]; !ok {
			st.Skipped = append(st.Skipped, id+" ("+tmpl.Resources[id].Type+")")
		}
	}
	if len(st.Skipped) > 0 {
		logf("not created by the local AWS (no effect on the data plane): %s", strings.Join(st.Skipped, ", "))
	}

	// Functions, with their code and layers from the stack's assets.
	layerDirs := map[string]string{} // layer version ARN -> unpacked dir
	var fns []lambdaemu.Function
	for _, id := range slices.Sorted(maps.Keys(tmpl.Resources)) {
		r := tmpl.Resources[id]
		switch r.Type {
		case "AWS::Lambda::LayerVersion":
			dir := filepath.Join(o.StateDir, "layers", id)
			if err := fetchZip(ctx, c.S3, r.Properties.Content, pseudo, dir); err != nil {
				return st, fmt.Errorf("layer %s: %w", id, err)
			}
			layerDirs[res[id]] = dir
		}
	}
	for _, id := range slices.Sorted(maps.Keys(tmpl.Resources)) {
		r := tmpl.Resources[id]
		if r.Type != "AWS::Lambda::Function" {
			continue
		}
		name := res[id]
		fn, err := c.Lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: &name})
		if err != nil {
			return st, fmt.Errorf("function %s: %w", name, err)
		}
		code := filepath.Join(o.StateDir, "functions", name)
		if err := fetchZip(ctx, c.S3, r.Properties.Code, pseudo, code); err != nil {
			return st, fmt.Errorf("function %s code: %w", name, err)
		}
		f, err := emulated(fn.Configuration, code, layerDirs, o.Concurrency)
		if err != nil {
			return st, err
		}
		fns = append(fns, f)
		st.Functions = append(st.Functions, name)
		logf("function %s: %s, %s, %s, %d MB, %d layer(s)", name, f.Runtime, fn.Configuration.Architectures, f.Timeout, f.MemoryMB, len(f.Layers))
	}
	// Functions deployed apart from the stack (ferry attach, SAM) that the
	// routes parameter names, with their code from where Lambda gives it.
	for _, name := range routedElsewhere(ctx, c.SSM, o.Stack, st.Functions, logf) {
		fn, err := c.Lambda.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: &name})
		if err != nil {
			logf("routed function %s: %v: not run here", name, err)
			continue
		}
		// Named as Lambda names it: a route's name is only checked for shape.
		name = aws.ToString(fn.Configuration.FunctionName)
		code := filepath.Join(o.StateDir, "functions", name)
		if fn.Code == nil || fn.Code.Location == nil {
			logf("routed function %s: Lambda gives no code location: not run here", name)
			continue
		}
		if err := fetchURL(ctx, aws.ToString(fn.Code.Location), code); err != nil {
			logf("routed function %s: its code: %v: not run here", name, err)
			continue
		}
		f, err := emulated(fn.Configuration, code, layerDirs, o.Concurrency)
		if err != nil {
			logf("routed function %v: not run here", err)
			continue
		}
		fns = append(fns, f)
		st.Functions = append(st.Functions, name)
		logf("routed function %s (not the stack's): %s, %s, %s, %d MB, %d layer(s)", name, f.Runtime, fn.Configuration.Architectures, f.Timeout, f.MemoryMB, len(f.Layers))
	}
	if len(fns) == 0 {
		return st, fmt.Errorf("stack %s has no Lambda functions", o.Stack)
	}

	// The router, from the task definition the stack deployed, and the
	// emulator it invokes.
	env, err := routerEnv(ctx, c, tmpl, res)
	if err != nil {
		return st, err
	}
	adminAddr, err := localrun.FreeAddr()
	if err != nil {
		return st, err
	}
	env = append(env,
		// Where the Fargate task listens on its own address, the local
		// router listens on loopback and advertises its tunnel port there.
		"FERRY_ROUTER_LISTEN="+o.Ingress,
		"FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0",
		"FERRY_ROUTER_ADVERTISE=127.0.0.1:0",
		"FERRY_ROUTER_ADMIN_LISTEN="+adminAddr,
		// One router here: no ring to find in Cloud Map (the stack's
		// namespace is not made locally).
		"FERRY_ROUTER_PEERS=",
		// No log pipeline extracts EMF locally: publish with PutMetricData.
		"FERRY_ROUTER_METRICS=emf,cloudwatch",
		"FERRY_ROUTER_METRICS_INTERVAL="+o.MetricsInterval.String(),
		"AWS_ENDPOINT_URL="+o.Endpoint,
		"AWS_REGION="+o.Region,
		"AWS_DISABLE_REQUEST_COMPRESSION=true", // moto reads no gzip bodies
	)
	st.ClientURL = "http://" + o.Ingress
	st.AdminURL = "http://" + adminAddr
	plane := localrun.Plane{Bin: o.BinDir, Functions: lambdaemu.Config{Functions: fns, Region: o.Region},
		RouterEnv: env, AdminURL: st.AdminURL, Dir: o.StateDir, Detached: true}
	if st.LambdaURL, _, err = plane.Run(ctx); err != nil {
		Stop(o.StateDir)
		return st, err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(o.StateDir, stateFile), b, 0o644); err != nil {
		Stop(o.StateDir)
		return st, err
	}
	logf("router: clients %s, admin %s; Lambda API %s", st.ClientURL, st.AdminURL, st.LambdaURL)
	return st, nil
}

// emulated is a deployed function as the emulator runs it, with its code
// unpacked in code and its layers among the stack's.
func emulated(cfg *lambdatypes.FunctionConfiguration, code string, layerDirs map[string]string, concurrency int) (lambdaemu.Function, error) {
	name := aws.ToString(cfg.FunctionName)
	if arch := hostArch(); len(cfg.Architectures) > 0 && string(cfg.Architectures[0]) != arch {
		return lambdaemu.Function{}, fmt.Errorf("function %s is deployed for %s; this machine runs %s binaries: deploy with -c sampleArch=%s (make local-deploy does)",
			name, cfg.Architectures[0], arch, arch)
	}
	f := lambdaemu.Function{
		Name: name, CodeDir: code, Runtime: string(cfg.Runtime), Handler: aws.ToString(cfg.Handler),
		Timeout:  lambdaemu.Duration{Duration: time.Duration(aws.ToInt32(cfg.Timeout)) * time.Second},
		MemoryMB: int(aws.ToInt32(cfg.MemorySize)), Concurrency: concurrency,
	}
	if cfg.Environment != nil {
		f.Env = cfg.Environment.Variables
	}
	for _, l := range cfg.Layers {
		dir, ok := layerDirs[aws.ToString(l.Arn)]
		if !ok {
			return f, fmt.Errorf("function %s: layer %s is not one of the stack's layers", name, aws.ToString(l.Arn))
		}
		f.Layers = append(f.Layers, dir)
	}
	return f, nil
}

// routedElsewhere lists the functions the stack's routes parameter names
// that are not among the stack's own (have).
func routedElsewhere(ctx context.Context, api *ssm.Client, stack string, have []string, logf func(string, ...any)) []string {
	name := config.RoutesParameterName(stack)
	out, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: &name})
	if err != nil {
		logf("routes parameter %s: %v: running the stack's functions only", name, err)
		return nil
	}
	routes, err := config.ParseRoutesDocument([]byte(aws.ToString(out.Parameter.Value)))
	if err != nil {
		logf("routes parameter %s: %v: running the stack's functions only", name, err)
		return nil
	}
	var fns []string
	for _, r := range routes {
		fn := lambdaarn.FunctionName(r.Function)
		if !slices.Contains(have, fn) && !slices.Contains(fns, fn) {
			fns = append(fns, fn)
		}
	}
	return fns
}

// Load reads the State a running data plane saved in dir.
func Load(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, fmt.Errorf("no local data plane in %s: %w", dir, err)
	}
	return st, json.Unmarshal(b, &st)
}

// routerEnv is the router container's environment, with its secrets read
// from Secrets Manager as ECS would inject them.
func routerEnv(ctx context.Context, c Clients, tmpl tmplDoc, res map[string]string) ([]string, error) {
	var arn string
	for id, r := range tmpl.Resources {
		if r.Type == "AWS::ECS::TaskDefinition" {
			if arn != "" {
				return nil, errors.New("the stack has more than one ECS task definition")
			}
			arn = res[id]
		}
	}
	if arn == "" {
		return nil, errors.New("the stack has no ECS task definition for the router")
	}
	td, err := c.ECS.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: &arn})
	if err != nil {
		return nil, fmt.Errorf("task definition %s: %w", arn, err)
	}
	for _, cd := range td.TaskDefinition.ContainerDefinitions {
		if aws.ToString(cd.Name) != "router" {
			continue
		}
		var env []string
		for _, kv := range cd.Environment {
			env = append(env, aws.ToString(kv.Name)+"="+aws.ToString(kv.Value))
		}
		for _, s := range cd.Secrets {
			v, err := c.SecretsManager.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: s.ValueFrom})
			if err != nil {
				return nil, fmt.Errorf("secret for %s: %w", aws.ToString(s.Name), err)
			}
			env = append(env, aws.ToString(s.Name)+"="+aws.ToString(v.SecretString))
		}
		return env, nil
	}
	return nil, fmt.Errorf("task definition %s has no container named router", arn)
}

type tmplDoc struct {
	Resources map[string]struct {
		Type       string
		Properties struct {
			Code    s3Location // AWS::Lambda::Function
			Content s3Location // AWS::Lambda::LayerVersion
		}
	}
}

func template(ctx context.Context, cf *cloudformation.Client, stack string) (tmplDoc, error) {
	out, err := cf.GetTemplate(ctx, &cloudformation.GetTemplateInput{StackName: &stack, TemplateStage: cftypes.TemplateStageProcessed})
	if err != nil {
		return tmplDoc{}, fmt.Errorf("template of %s: %w", stack, err)
	}
	var t tmplDoc
	if err := json.Unmarshal([]byte(aws.ToString(out.TemplateBody)), &t); err != nil {
		return t, fmt.Errorf("template of %s: %w", stack, err)
	}
	return t, nil
}

// resources maps the stack's logical ids to physical ids (empty for
// resources that have none, such as security-group rules in moto).
func resources(ctx context.Context, cf *cloudformation.Client, stack string) (map[string]string, error) {
	m := map[string]string{}
	p := cloudformation.NewListStackResourcesPaginator(cf, &cloudformation.ListStackResourcesInput{StackName: &stack})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("resources of %s: %w", stack, err)
		}
		for _, r := range page.StackResourceSummaries {
			if id := aws.ToString(r.LogicalResourceId); id != "" {
				m[id] = aws.ToString(r.PhysicalResourceId)
			}
		}
	}
	return m, nil
}

func hostArch() string {
	if runtime.GOARCH == "arm64" {
		return "arm64"
	}
	return "x86_64"
}
