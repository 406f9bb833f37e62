package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"github.com/cenkalti/backoff/v4"

	bootconfig "github.com/ferryrun/ferry/bootstrap/config"
	"github.com/ferryrun/ferry/internal/lambdaarn"
	"github.com/ferryrun/ferry/router/config"
)

// An attachment is what ferry attach changed on a function, kept in the
// SSM parameter /ferry/<stack>/attached/<function> so that ferry detach
// undoes exactly that and nothing else. Of the function's environment it
// holds only the prior values of the variables attach sets: ferry's
// settings (FERRY_*) and the exec wrapper.
type attachment struct {
	Function string `json:"function"`
	// Routes is the routes parameter the route went into.
	Routes string `json:"routes_parameter"`
	// Layer is the layer version attach added.
	Layer string `json:"layer"`
	// Env holds each variable attach set and its value before: null where
	// the function had none.
	Env map[string]*string `json:"env_before"`
	// Vpc is the function's VPC configuration before, where attach changed
	// its subnets; otherwise attach only added SecurityGroup to its groups.
	Vpc *vpcConfig `json:"vpc_before,omitempty"`
	// SecurityGroup is the group attach created for the function, which
	// the stack's tunnel group admits on the tunnel port.
	SecurityGroup string `json:"security_group"`
	TunnelGroup   string `json:"tunnel_group"`
	// RolePolicy is the inline policy attach put on the function's role
	// ("role/policy") so that Lambda may place it in the VPC.
	RolePolicy string `json:"role_policy,omitempty"`
	// Permission is the statement attach added to the function's policy
	// (recorded once added: a statement of that id already there is not
	// attach's to remove).
	Permission string       `json:"permission,omitempty"`
	Route      config.Route `json:"route"`
}

type vpcConfig struct {
	SubnetIDs        []string `json:"subnet_ids"`
	SecurityGroupIDs []string `json:"security_group_ids"`
	IPv6             bool     `json:"ipv6_allowed_for_dual_stack,omitempty"`
}

// attachedParameterName is where the attachment of fn to stack is kept.
func attachedParameterName(stack, fn string) string { return "/ferry/" + stack + "/attached/" + fn }

// execWrapper is the path of ferry's exec wrapper in its layer: a managed
// runtime (Node, Python, ...) runs ferry's bootstrap through it.
const execWrapper = "/opt/ferry-exec-wrapper"

// ferryStack is what a ferry stack publishes for functions deployed
// apart from it.
type ferryStack struct {
	name        string
	vpc         string
	subnets     []string
	tunnelGroup string
	routerRole  string
	routes      string         // the routes parameter's name
	own         []config.Route // the stack's own routes (FERRY_ROUTER_ROUTES)
	// public: the routers' tunnel port is open to the internet, and
	// functions dial back from anywhere (TunnelMode public).
	public bool
}

type attachClients struct {
	cf     *cloudformation.Client
	lambda *lambda.Client
	ec2    *ec2.Client
	iam    *iam.Client
	ssm    *ssm.Client
}

func newAttachClients(cfg aws.Config) attachClients {
	return attachClients{cloudformation.NewFromConfig(cfg), lambda.NewFromConfig(cfg), ec2.NewFromConfig(cfg),
		iam.NewFromConfig(cfg), ssm.NewFromConfig(cfg)}
}

// envFlags is -env, given once per variable.
type envFlags map[string]string

func (e envFlags) String() string { return strings.Join(slices.Sorted(maps.Keys(e)), ",") }

func (e envFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || !strings.HasPrefix(k, "FERRY_") {
		return fmt.Errorf("want FERRY_NAME=value, got %q", s)
	}
	if !slices.Contains(bootconfig.Names, k) {
		return fmt.Errorf("%s is not a setting of ferry's bootstrap (README lists them)", k)
	}
	e[k] = v
	return nil
}

// attach runs ferry attach: it puts an existing function behind the
// stack's routers, as the SAM example's template does, and records what
// it changed.
func attach(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	env := envFlags{}
	var rt config.Route
	fnName, stackName, cfg, err := attachCommand(ctx, "attach", args, stderr, func(fs *flag.FlagSet) {
		fs.Var(env, "env", "a bootstrap setting for the function, `FERRY_NAME=value` (repeat for more), e.g. FERRY_READINESS_PATH=/healthz")
		fs.StringVar(&rt.Host, "host", "", "route requests for this host (default any host)")
		fs.StringVar(&rt.PathPrefix, "path", "", "route requests under this path prefix, e.g. /api (default any path)")
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c := newAttachClients(cfg)
	st, err := readStack(ctx, c.cf, stackName)
	if err != nil {
		return unanswered(err, cfg)
	}
	fn, err := c.lambda.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: &fnName})
	if err != nil {
		return fmt.Errorf("function %s: %w", fnName, err)
	}
	name := aws.ToString(fn.FunctionName)
	if v := aws.ToString(fn.Version); v != "$LATEST" {
		// Attach changes the function's configuration, which versions
		// cannot have, and routes invoke the function unqualified.
		return fmt.Errorf("%s names version %s of %s: attach the function itself (-function %s); routes invoke its $LATEST", fnName, v, name, name)
	}
	record := attachedParameterName(st.name, name)
	if p, err := c.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: &record}); err == nil {
		var prior attachment
		if json.Unmarshal([]byte(aws.ToString(p.Parameter.Value)), &prior) == nil && prior.Layer == "" && prior.SecurityGroup != "" {
			return fmt.Errorf("a detach of %s from %s is still waiting for AWS to release its security group %s: run ferry detach -function %s -stack %s again first",
				name, st.name, prior.SecurityGroup, name, st.name)
		}
		return fmt.Errorf("%s is already attached to %s (%s): ferry detach -function %s -stack %s first", name, st.name, record, name, st.name)
	} else if !notFound(err) {
		return fmt.Errorf("reading %s: %w", record, err)
	}
	rt.Function = name
	a := attachment{Function: name, Routes: st.routes, TunnelGroup: st.tunnelGroup, Route: rt, Env: map[string]*string{}}
	update, err := plan(ctx, c, st, fn, env, &a)
	if err != nil {
		return err
	}
	// The route must be one the routers can use, and free, before
	// anything changes: neither the stack's own routes nor those added
	// may take its requests.
	current, _, err := readRoutes(ctx, c.ssm, st.routes)
	if err != nil {
		return err
	}
	for _, r := range st.own {
		if sameRequests(r, rt) {
			return fmt.Errorf("the stack's own route already takes %s%s (to %s): give the function a -host or a -path of its own", orAny(rt.Host), orAny(rt.PathPrefix), r.Function)
		}
	}
	if routes, err := addRoute(rt)(current); err != nil {
		return fmt.Errorf("%s %w", st.routes, err)
	} else if err := usable(routes); err != nil {
		return err
	}
	// So must the id of the statement that lets the router invoke it.
	sid := "ferry-router-" + st.name
	if pol, err := c.lambda.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: &name}); err == nil && strings.Contains(aws.ToString(pol.Policy), `"`+sid+`"`) {
		return fmt.Errorf("%s's policy already has a statement %s (added by hand?): remove it first (aws lambda remove-permission --function-name %s --statement-id %s)",
			name, sid, name, sid)
	} else if err != nil && !notFound(err) {
		return fmt.Errorf("reading %s's policy: %w", name, err)
	}

	// The changes, recorded first: a detach after a failure undoes
	// whatever was done.
	fmt.Fprintf(stdout, "attaching %s to %s\n", name, st.name)
	if !st.public {
		sg, err := c.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
			// A name of its own each time: AWS may keep an earlier one a
			// while after a detach (see detach).
			GroupName: aws.String(fmt.Sprintf("ferry-%s-%d", name, time.Now().Unix())), VpcId: &st.vpc,
			Description: aws.String("ferry attach: " + name + " dials the tunnel port of " + st.name),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: []ec2types.Tag{
				{Key: aws.String("ferry:stack"), Value: &st.name}, {Key: aws.String("ferry:attached"), Value: &name}}}},
		})
		if err != nil {
			return fmt.Errorf("creating the function's security group: %w", err)
		}
		a.SecurityGroup = aws.ToString(sg.GroupId)
		update.VpcConfig.SecurityGroupIds = append(update.VpcConfig.SecurityGroupIds, a.SecurityGroup)
	}
	if err := writeRecord(ctx, c.ssm, record, a); err != nil {
		if a.SecurityGroup != "" {
			c.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &a.SecurityGroup})
		}
		return err
	}
	undo := func(step string, err error) error {
		return fmt.Errorf("attach stopped at %s: %w\nferry detach -function %s -stack %s undoes what was done", step, err, name, st.name)
	}
	if a.SecurityGroup != "" {
		step := fmt.Sprintf("admitting %s on %s's tunnel port", a.SecurityGroup, st.tunnelGroup)
		if _, err := c.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId: &st.tunnelGroup, IpPermissions: tunnelRule(a.SecurityGroup, name)}); err != nil {
			return undo(step, err)
		}
		fmt.Fprintf(stdout, "  %s\n", step)
	} else {
		fmt.Fprintf(stdout, "  public tunnel: it dials back over the internet, from where it runs (in a VPC, through its NAT)\n")
	}
	if a.RolePolicy != "" {
		role, policy, _ := strings.Cut(a.RolePolicy, "/")
		step := "letting role " + role + " place the function in the VPC (inline policy " + policy + ")"
		if _, err := c.iam.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: &role, PolicyName: &policy, PolicyDocument: aws.String(vpcAccessPolicy)}); err != nil {
			return undo(step, err)
		}
		fmt.Fprintf(stdout, "  %s\n", step)
	}
	step := fmt.Sprintf("adding layer %s and %d setting(s)", a.Layer, len(a.Env))
	if a.SecurityGroup != "" {
		step += fmt.Sprintf(", subnets %s and group %s", strings.Join(update.VpcConfig.SubnetIds, ","), a.SecurityGroup)
	}
	// Against the configuration read above: a change made meanwhile is
	// not overwritten.
	update.RevisionId = fn.RevisionId
	if err := updateFunction(ctx, c.lambda, update); err != nil {
		return undo(step, err)
	}
	fmt.Fprintf(stdout, "  %s\n", step)
	step = "letting " + st.routerRole + " invoke it"
	if _, err := c.lambda.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: &name, StatementId: &sid,
		Action: aws.String("lambda:InvokeFunction"), Principal: &st.routerRole}); err != nil {
		return undo(step, err)
	}
	a.Permission = sid
	if err := writeRecord(ctx, c.ssm, record, a); err != nil {
		return undo(step, err)
	}
	fmt.Fprintf(stdout, "  %s\n", step)
	version, err := changeRoutes(ctx, c.ssm, st.routes, addRoute(rt), stderr)
	if err != nil {
		return undo("adding its route", err)
	}
	fmt.Fprintf(stdout, "  route %s%s -> %s (%s version %d); routers put it in force within seconds\n", rt.Host, orAny(rt.PathPrefix), name, st.routes, version)
	fmt.Fprintf(stdout, "attached; ferry detach -function %s -stack %s undoes it (record: %s)\n", name, st.name, record)
	return nil
}

// writeRecord keeps a in the SSM parameter name.
func writeRecord(ctx context.Context, api *ssm.Client, name string, a attachment) error {
	doc, _ := json.Marshal(a)
	if _, err := api.PutParameter(ctx, &ssm.PutParameterInput{Name: &name, Value: aws.String(string(doc)), Overwrite: aws.Bool(true),
		Type: ssmtypes.ParameterTypeString, Tier: ssmtypes.ParameterTierIntelligentTiering}); err != nil {
		return fmt.Errorf("recording the attachment in %s: %w", name, err)
	}
	return nil
}

// plan checks that fn can be attached to st and fills in a with what
// attach will change, returning the function's new configuration (its
// VPC groups without the one attach is yet to create).
func plan(ctx context.Context, c attachClients, st ferryStack, fn *lambda.GetFunctionConfigurationOutput, env envFlags, a *attachment) (*lambda.UpdateFunctionConfigurationInput, error) {
	name := a.Function
	if fn.PackageType == lambdatypes.PackageTypeImage {
		return nil, fmt.Errorf("%s is a container image: Lambda adds no layers to one; build ferry's bootstrap into the image instead (README)", name)
	}
	arch := "x86_64"
	if len(fn.Architectures) > 0 {
		arch = string(fn.Architectures[0])
	}
	layerParam := config.LayerParameterName(st.name, arch)
	p, err := c.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: &layerParam})
	if err != nil {
		return nil, fmt.Errorf("ferry's layer for %s (%s): %w", arch, layerParam, err)
	}
	a.Layer = aws.ToString(p.Parameter.Value)
	layers := []string{}
	for _, l := range fn.Layers {
		arn := aws.ToString(l.Arn)
		if layerName(arn) == layerName(a.Layer) || strings.Contains(arn, "FerryLayer") {
			return nil, fmt.Errorf("%s already has a ferry layer (%s): it is behind ferry already, another way or another stack; undo that first", name, arn)
		}
		layers = append(layers, arn)
	}
	if fn.Environment != nil && fn.Environment.Error != nil {
		// Its variables cannot be read (a KMS key out of reach, say): an
		// update would replace them with ferry's alone.
		return nil, fmt.Errorf("%s's environment cannot be read (%s: %s): mend that first", name,
			aws.ToString(fn.Environment.Error.ErrorCode), aws.ToString(fn.Environment.Error.Message))
	}
	if len(layers) >= 5 {
		return nil, fmt.Errorf("%s has %d layers, Lambda's most: remove one to make room for ferry's", name, len(layers))
	}

	vars := map[string]string{}
	if fn.Environment != nil && fn.Environment.Variables != nil {
		vars = maps.Clone(fn.Environment.Variables)
	}
	set := maps.Clone(env)
	if strings.HasPrefix(string(fn.Runtime), "provided") {
		// An OS-only runtime runs no exec wrapper: ferry's layer brings
		// the bootstrap, which must be told what starts the server.
		if set[bootconfig.EnvAppCmd] == "" && vars[bootconfig.EnvAppCmd] == "" {
			return nil, usagef("attach: %s runs %s, whose bootstrap ferry's layer replaces: name the command that starts its web server with -env %s=... "+
				"(its code must hold no file named bootstrap, which Lambda would run instead)", name, fn.Runtime, bootconfig.EnvAppCmd)
		}
	} else {
		if w := vars["AWS_LAMBDA_EXEC_WRAPPER"]; w == execWrapper {
			return nil, fmt.Errorf("%s already runs ferry's exec wrapper: it is behind ferry already, another way or another stack; undo that first", name)
		} else if w != "" {
			return nil, fmt.Errorf("%s already runs through AWS_LAMBDA_EXEC_WRAPPER=%s (another adapter, such as Lambda Web Adapter?): "+
				"remove it and its layer, then attach", name, w)
		}
		set["AWS_LAMBDA_EXEC_WRAPPER"] = execWrapper
	}
	for k, v := range set {
		if old, ok := vars[k]; ok {
			a.Env[k] = aws.String(old)
		} else {
			a.Env[k] = nil
		}
		vars[k] = v
	}

	update := &lambda.UpdateFunctionConfigurationInput{FunctionName: &name, Layers: append(layers, a.Layer),
		Environment: &lambdatypes.Environment{Variables: vars}}
	if st.public {
		return update, nil // wherever it runs, it dials the routers' public addresses
	}
	if v := fn.VpcConfig; v != nil && len(v.SubnetIds) > 0 {
		if aws.ToString(v.VpcId) != st.vpc {
			return nil, fmt.Errorf("%s runs in %s, the ferry stack %s in %s: the function must reach the router's tunnel port; "+
				"move it to %s or deploy the stack in its VPC (-c vpcId=)", name, aws.ToString(v.VpcId), st.name, st.vpc, st.vpc)
		}
		if len(v.SecurityGroupIds) >= 5 {
			return nil, fmt.Errorf("%s has %d security groups, Lambda's most: attach adds one", name, len(v.SecurityGroupIds))
		}
		update.VpcConfig = &lambdatypes.VpcConfig{SubnetIds: v.SubnetIds, SecurityGroupIds: slices.Clone(v.SecurityGroupIds),
			Ipv6AllowedForDualStack: v.Ipv6AllowedForDualStack}
	} else {
		// Outside a VPC: into the stack's private subnets, whose NAT
		// keeps its way out. Lambda needs the role to manage its network
		// interfaces there.
		a.Vpc = &vpcConfig{SubnetIDs: []string{}, SecurityGroupIDs: []string{}}
		if v != nil {
			a.Vpc.SecurityGroupIDs = append(a.Vpc.SecurityGroupIDs, v.SecurityGroupIds...)
			a.Vpc.IPv6 = aws.ToBool(v.Ipv6AllowedForDualStack)
		}
		update.VpcConfig = &lambdatypes.VpcConfig{SubnetIds: st.subnets, SecurityGroupIds: []string{}}
		role := aws.ToString(fn.Role)
		a.RolePolicy = role[strings.LastIndex(role, "/")+1:] + "/ferry-vpc-access-" + name
	}
	return update, nil
}

// vpcAccessPolicy is what Lambda needs of a function's role to place the
// function in a VPC (as AWS's AWSLambdaVPCAccessExecutionRole grants).
const vpcAccessPolicy = `{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
"ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]}]}`

// tunnelRule admits group on the tunnel port.
func tunnelRule(group, fn string) []ec2types.IpPermission {
	return []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(config.TunnelPort), ToPort: aws.Int32(config.TunnelPort),
		UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: &group, Description: aws.String("ferry attach: tunnels from " + fn)}}}}
}

// updateFunction changes a function's configuration and waits until the
// change is in force. A role just given its VPC policy may not be seen
// with it for some seconds, and an update still in progress refuses
// another: both are retried for two minutes.
func updateFunction(ctx context.Context, api *lambda.Client, in *lambda.UpdateFunctionConfigurationInput) error {
	b := backoff.NewExponentialBackOff()
	b.MaxElapsedTime = 2 * time.Minute
	err := backoff.Retry(func() error {
		_, err := api.UpdateFunctionConfiguration(ctx, in)
		var conflict *lambdatypes.ResourceConflictException
		var invalid *lambdatypes.InvalidParameterValueException
		switch {
		case err == nil:
			return nil
		case errors.As(err, &conflict), errors.As(err, &invalid) && strings.Contains(invalid.ErrorMessage(), "execution role"):
			return err
		case errors.As(err, new(*lambdatypes.PreconditionFailedException)):
			return backoff.Permanent(fmt.Errorf("the function's configuration changed meanwhile; run the command again: %w", err))
		}
		return backoff.Permanent(err)
	}, backoff.WithContext(b, ctx))
	if err != nil {
		return err
	}
	return lambda.NewFunctionUpdatedWaiter(api).Wait(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: in.FunctionName}, 5*time.Minute)
}

// attachCommand parses the command line of attach or detach (verb): the
// flags both take, and those more adds. It returns the function and stack
// named and the AWS configuration to reach them with.
func attachCommand(ctx context.Context, verb string, args []string, stderr io.Writer, more func(*flag.FlagSet)) (fn, stack string, cfg aws.Config, err error) {
	fs := flagSet("ferry "+verb, stderr)
	fs.StringVar(&fn, "function", "", "the function's name or ARN (required)")
	fs.StringVar(&stack, "stack", "", "the ferry stack (default Ferry-<region>)")
	state := fs.String("state", ".local", "where the environment names no AWS, use the local AWS this `directory` describes")
	more(fs)
	if err := parse(fs, args); err != nil {
		return "", "", cfg, err
	}
	if fn == "" {
		return "", "", cfg, usagef("%s: -function is required", verb)
	}
	if cfg, err = awsConfig(ctx, *state, stderr); err != nil {
		return "", "", cfg, err
	}
	if stack == "" {
		stack = "Ferry-" + cfg.Region
	}
	return fn, stack, cfg, nil
}

// detach runs ferry detach: it undoes what ferry attach recorded, each
// step only if attach did it, and removes the record.
func detach(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fnName, stackName, cfg, err := attachCommand(ctx, "detach", args, stderr, func(*flag.FlagSet) {})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c := newAttachClients(cfg)
	name := lambdaarn.FunctionName(fnName)
	record := attachedParameterName(stackName, name)
	p, err := c.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: &record})
	if notFound(err) {
		return fmt.Errorf("%s is not attached to %s (no %s)", name, stackName, record)
	} else if err != nil {
		return unanswered(fmt.Errorf("reading %s: %w", record, err), cfg)
	}
	var a attachment
	if err := json.Unmarshal([]byte(aws.ToString(p.Parameter.Value)), &a); err != nil || a.Function != name {
		return fmt.Errorf("%s holds no attachment of %s (%v): fix or delete it by hand", record, name, err)
	}
	fmt.Fprintf(stdout, "detaching %s from %s\n", name, stackName)
	var errs []error
	fail := func(step string, err error) {
		errs = append(errs, fmt.Errorf("%s: %w", step, err))
	}

	// The route first, so that routers stop sending before the function
	// changes under them. A routes parameter gone with its stack took the
	// route with it.
	_, err = changeRoutes(ctx, c.ssm, a.Routes, removeRoute(a.Route), stderr)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "  route %s%s -> %s removed\n", a.Route.Host, orAny(a.Route.PathPrefix), name)
	case errors.Is(err, errNoRoutes) || errors.Is(err, errNoSuchRoute):
		fmt.Fprintf(stdout, "  route %s%s -> %s already gone\n", a.Route.Host, orAny(a.Route.PathPrefix), name)
	default:
		fail("its route", err)
	}
	fn, err := c.lambda.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: &name})
	switch {
	case notFound(err):
		fmt.Fprintf(stdout, "  the function is gone: nothing to restore on it\n")
	case err != nil:
		fail("reading the function", err)
	case a.Layer == "":
		// An earlier detach restored it and left only the group.
	default:
		if a.Permission != "" {
			if _, err := c.lambda.RemovePermission(ctx, &lambda.RemovePermissionInput{FunctionName: &name, StatementId: &a.Permission}); err != nil && !notFound(err) {
				fail("removing the router's permission", err)
			} else {
				fmt.Fprintf(stdout, "  the router's permission %s removed\n", a.Permission)
			}
		}
		in := restored(fn, a)
		in.RevisionId = fn.RevisionId
		if err := updateFunction(ctx, c.lambda, in); err != nil {
			fail("restoring its configuration", err)
		} else {
			fmt.Fprintf(stdout, "  its layers, settings and network restored\n")
		}
	}
	if a.RolePolicy != "" {
		role, policy, _ := strings.Cut(a.RolePolicy, "/")
		if _, err := c.iam.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: &role, PolicyName: &policy}); err != nil && !notFound(err) {
			fail("removing the role's policy "+policy, err)
		} else {
			fmt.Fprintf(stdout, "  role %s's policy %s removed\n", role, policy)
		}
	}
	if a.SecurityGroup != "" && len(errs) == 0 {
		if _, err := c.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{
			GroupId: &a.TunnelGroup, IpPermissions: tunnelRule(a.SecurityGroup, name)}); err != nil && !notFound(err) {
			fail("closing the tunnel port to "+a.SecurityGroup, err)
		}
		_, err := c.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &a.SecurityGroup})
		switch {
		case apiCode(err) == "DependencyViolation":
			// Lambda releases a function's network interfaces some minutes
			// after it leaves a VPC: only the group is left, and the record
			// keeps just that for the next detach.
			left := attachment{Function: a.Function, Routes: a.Routes, SecurityGroup: a.SecurityGroup, TunnelGroup: a.TunnelGroup}
			if err := writeRecord(ctx, c.ssm, record, left); err != nil {
				fail("recording the group left", err)
				break
			}
			return fmt.Errorf("detached, but security group %s is still held by the network interfaces the function left, which AWS releases within "+
				"about 20 minutes: then run ferry detach -function %s -stack %s again to delete it", a.SecurityGroup, name, stackName)
		case err != nil && !notFound(err):
			fail("deleting security group "+a.SecurityGroup, err)
		default:
			fmt.Fprintf(stdout, "  security group %s and its rule on %s deleted\n", a.SecurityGroup, a.TunnelGroup)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("detach left work undone (the record %s stays; run detach again): %w", record, errors.Join(errs...))
	}
	if _, err := c.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: &record}); err != nil {
		return fmt.Errorf("deleting %s: %w", record, err)
	}
	fmt.Fprintf(stdout, "detached\n")
	return nil
}

// restored is fn's configuration with what a changed undone: ferry's
// layer gone, the variables it set back as they were, and the VPC as it
// was (or without attach's group). What else changed since stays.
func restored(fn *lambda.GetFunctionConfigurationOutput, a attachment) *lambda.UpdateFunctionConfigurationInput {
	layers := []string{}
	for _, l := range fn.Layers {
		// Any version of the layer attach added: it may have been moved
		// to a newer one since.
		if layerName(aws.ToString(l.Arn)) != layerName(a.Layer) {
			layers = append(layers, aws.ToString(l.Arn))
		}
	}
	vars := map[string]string{}
	if fn.Environment != nil && fn.Environment.Variables != nil {
		vars = maps.Clone(fn.Environment.Variables)
	}
	for k, v := range a.Env {
		if v == nil {
			delete(vars, k)
		} else {
			vars[k] = *v
		}
	}
	in := &lambda.UpdateFunctionConfigurationInput{FunctionName: fn.FunctionName, Layers: layers,
		Environment: &lambdatypes.Environment{Variables: vars}}
	switch v := fn.VpcConfig; {
	case a.Vpc != nil:
		in.VpcConfig = &lambdatypes.VpcConfig{SubnetIds: a.Vpc.SubnetIDs, SecurityGroupIds: a.Vpc.SecurityGroupIDs,
			Ipv6AllowedForDualStack: aws.Bool(a.Vpc.IPv6)}
	case v != nil && a.SecurityGroup != "":
		in.VpcConfig = &lambdatypes.VpcConfig{SubnetIds: v.SubnetIds, Ipv6AllowedForDualStack: v.Ipv6AllowedForDualStack,
			SecurityGroupIds: slices.DeleteFunc(slices.Clone(v.SecurityGroupIds), func(g string) bool { return g == a.SecurityGroup })}
	}
	return in
}

// readStack reads what the ferry stack name exports for functions.
func readStack(ctx context.Context, cf *cloudformation.Client, name string) (ferryStack, error) {
	out, err := cf.DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: &name})
	if err != nil {
		return ferryStack{}, fmt.Errorf("ferry stack %s: %w (name it with -stack)", name, err)
	}
	outputs := map[string]string{}
	for _, o := range out.Stacks[0].Outputs {
		outputs[aws.ToString(o.OutputKey)] = aws.ToString(o.OutputValue)
	}
	st := ferryStack{name: name, vpc: outputs["VpcId"], tunnelGroup: outputs["TunnelSecurityGroupId"],
		routerRole: outputs["RouterTaskRoleArn"], routes: outputs["RoutesParameterName"], public: outputs["TunnelMode"] == "public"}
	if own := outputs["StackRoutes"]; own != "" {
		rs, err := config.ParseRoutes(own)
		if err != nil {
			return st, fmt.Errorf("stack %s's StackRoutes output %q: %w", name, own, err)
		}
		st.own = rs
	}
	if outputs["PrivateSubnetIds"] != "" {
		st.subnets = strings.Split(outputs["PrivateSubnetIds"], ",")
	}
	if st.vpc == "" || st.tunnelGroup == "" || st.routerRole == "" || st.routes == "" || len(st.subnets) == 0 {
		return st, fmt.Errorf("stack %s does not export what attach needs (VpcId, PrivateSubnetIds, TunnelSecurityGroupId, RouterTaskRoleArn, RoutesParameterName): "+
			"is it a ferry stack, deployed with this version?", name)
	}
	return st, nil
}

// layerName is a layer version ARN without its version.
func layerName(arn string) string {
	if i := strings.LastIndex(arn, ":"); strings.Count(arn, ":") == 7 && i > 0 {
		return arn[:i]
	}
	return arn
}

// notFound reports whether err says the thing asked for does not exist.
func notFound(err error) bool {
	var lnf *lambdatypes.ResourceNotFoundException
	var pnf *ssmtypes.ParameterNotFound
	var nse *iamtypes.NoSuchEntityException
	switch code := apiCode(err); {
	case err == nil:
		return false
	case errors.As(err, &lnf), errors.As(err, &pnf), errors.As(err, &nse):
		return true
	default:
		return code == "InvalidGroup.NotFound" || code == "InvalidPermission.NotFound"
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
