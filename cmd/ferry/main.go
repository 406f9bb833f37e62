// Command ferry is ferry's command line:
//
//	ferry metrics -function NAME [-since 1h | -start T -end T] [-period 1m] [-json] [-png FILE]
//	ferry routes list|add|remove [-function NAME -host HOST -path /P] [-stack NAME]
//	ferry attach|detach -function NAME [-host HOST -path /P] [-stack NAME]
//	ferry local start -stack Ferry-us-east-1 [-state .local] [-bin dist] [-ingress 127.0.0.1:8080]
//	ferry local stop [-state .local]
//	ferry help | version
//
// metrics reads a function's ferry metrics from CloudWatch and prints what
// ferry saved. routes edits the routes the stack's routers read from SSM,
// beyond the stack's own. attach puts a function deployed apart from the
// stack behind it (layer, settings, network, permission, route) and
// detach undoes exactly that. local start runs, on this machine, the data
// plane of a stack deployed to a local AWS (see localstack/dataplane);
// local stop ends it.
// AWS endpoint, region and credentials come from the environment
// (AWS_ENDPOINT_URL, AWS_REGION, ...), as for any AWS tool.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"

	"github.com/ferryrun/ferry/internal/review"
	"github.com/ferryrun/ferry/internal/version"
	"github.com/ferryrun/ferry/localstack/dataplane"
)

const usage = `ferry reviews what ferry saved, puts your functions behind it, and runs a deployed stack's data plane locally.

usage:
  ferry metrics -function NAME [-since 1h | -start RFC3339 -end RFC3339] [-period 1m] [-json] [-png FILE]
  ferry routes list [-stack NAME | -parameter NAME]
  ferry routes add -function NAME [-host HOST] [-path /PREFIX] [-max-concurrency N] [-policy pack|spread] [-plain auto|off]
  ferry routes remove -function NAME [-host HOST] [-path /PREFIX]
  ferry attach -function NAME [-host HOST] [-path /PREFIX] [-env FERRY_NAME=value ...] [-stack NAME]
  ferry detach -function NAME [-stack NAME]
  ferry local start -stack NAME [-state .local] [-bin dist] [-ingress 127.0.0.1:8080]
  ferry local stop [-state .local]
  ferry help | --help
  ferry version | --version

ferry COMMAND -h shows a command's flags. AWS endpoint, region and
credentials come from the environment (AWS_ENDPOINT_URL, AWS_REGION, ...).
Exit status: 0 done, 1 failed, 2 a command line ferry does not take.`

// usageError is a command line ferry does not take: exit status 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// usagef is a usageError saying what is wrong and where to read more.
func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format+" (ferry --help)", a...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err and returns the status for it: 0 for none or a
// help request, 2 for a command line ferry does not take, 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	var usage usageError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "ferry:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "ferry:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{errors.New("no command")}
	}
	switch {
	case args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	case args[0] == "version" || args[0] == "-version" || args[0] == "--version":
		fmt.Fprintln(stdout, version.Line("ferry"))
		return nil
	case args[0] == "metrics":
		return metrics(ctx, args[1:], stdout, stderr)
	case args[0] == "routes":
		return routes(ctx, args[1:], stdout, stderr)
	case args[0] == "attach":
		return attach(ctx, args[1:], stdout, stderr)
	case args[0] == "detach":
		return detach(ctx, args[1:], stdout, stderr)
	case args[0] == "local" && len(args) > 1 && args[1] == "start":
		return localStart(ctx, args[2:], stdout, stderr)
	case args[0] == "local" && len(args) > 1 && args[1] == "stop":
		fs := flagSet("ferry local stop", stderr)
		state := fs.String("state", ".local", "state directory of the data plane")
		if err := parse(fs, args[2:]); err != nil {
			return err
		}
		return dataplane.Stop(*state)
	}
	return usagef("unknown command %q", strings.Join(args[:min(2, len(args))], " "))
}

// flagSet is a command's flags: -h prints them to stderr.
func flagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses a command's flags: a help request stands, anything else
// wrong (an unknown flag, a bad value, a stray argument) is a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return err
	} else if err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

func metrics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("ferry metrics", stderr)
	fn := fs.String("function", "", "the function's name (required)")
	since := fs.Duration("since", time.Hour, "review the last `duration` (ignored with -start)")
	start := fs.String("start", "", "window start, RFC 3339")
	end := fs.String("end", "", "window end, RFC 3339 (default now)")
	period := fs.Duration("period", time.Minute, "step of the series, a multiple of 1m")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	png := fs.String("png", "", "also chart compute saved and requests over time into this PNG `file`")
	state := fs.String("state", ".local", "where the environment names no AWS, use the local AWS this `directory` describes (make local-up)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *fn == "" {
		return usagef("metrics: -function is required")
	}
	if *period < time.Minute || *period%time.Minute != 0 {
		return usagef("metrics: -period %v: want a multiple of 1m", *period)
	}
	w := review.Window{End: time.Now(), Period: *period}
	var err error
	if *end != "" {
		if w.End, err = time.Parse(time.RFC3339, *end); err != nil {
			return usagef("metrics: -end: %v", err)
		}
	}
	w.Start = w.End.Add(-*since)
	if *start != "" {
		if w.Start, err = time.Parse(time.RFC3339, *start); err != nil {
			return usagef("metrics: -start: %v", err)
		}
	}
	cfg, err := awsConfig(ctx, *state, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rep, err := review.Fetch(ctx, cloudwatch.NewFromConfig(cfg), *fn, w)
	if err != nil {
		return unanswered(err, cfg)
	}
	if *png != "" {
		if err := rep.WritePNG(*png); err != nil {
			return fmt.Errorf("-png: %w", err)
		}
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
}

// localAWSFile, in a state directory, is what make local-up writes: where
// the local AWS answers.
const localAWSFile = "local-aws.json"

// awsConfig is the AWS configuration from the environment, as for any AWS
// tool. Where this machine is configured for no AWS at all (no endpoint,
// profile, keys, role or shared config file) and the state directory
// describes a local AWS on loopback (make local-up), it is that one, and
// stderr says so: the commands make local-deploy prints then work as
// printed, and nobody set up for a real account is sent to a local one.
func awsConfig(ctx context.Context, state string, stderr io.Writer) (aws.Config, error) {
	path := filepath.Join(state, localAWSFile)
	b, err := os.ReadFile(path)
	if err != nil || realAWSConfigured() {
		cfg, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			return cfg, fmt.Errorf("AWS configuration: %w", err)
		}
		return cfg, nil
	}
	var local struct{ Endpoint, Region string }
	if err := json.Unmarshal(b, &local); err != nil || local.Endpoint == "" || local.Region == "" || !loopback(local.Endpoint) {
		return aws.Config{}, fmt.Errorf("%s does not describe a local AWS (want an endpoint on this machine and a region): run make local-up again", path)
	}
	fmt.Fprintf(stderr, "ferry: using the local AWS at %s (from %s; AWS_ENDPOINT_URL or AWS_PROFILE chooses another)\n", local.Endpoint, path)
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(local.Region), awsconfig.WithBaseEndpoint(local.Endpoint),
		awsconfig.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test", Source: "ferry local AWS"}, nil
		})))
	if err != nil {
		return cfg, fmt.Errorf("AWS configuration: %w", err)
	}
	return cfg, nil
}

// realAWSConfigured reports whether the environment or the shared files
// name an AWS account's credentials or endpoint, as the SDK would find
// them. (A role from the instance's metadata cannot be seen without
// asking; a machine that has one rarely runs a local AWS in .local/.)
func realAWSConfigured() bool {
	for _, k := range []string{"AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		if os.Getenv(k) != "" {
			return true
		}
	}
	home, _ := os.UserHomeDir()
	for _, f := range []struct{ env, def string }{
		{"AWS_CONFIG_FILE", filepath.Join(home, ".aws", "config")},
		{"AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, ".aws", "credentials")},
	} {
		path := os.Getenv(f.env)
		if path == "" {
			path = f.def
		}
		if _, err := os.Stat(path); err == nil {
			return true
		}
	}
	return false
}

// loopback reports whether endpoint is an address on this machine.
func loopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	return u.Hostname() == "localhost" || net.ParseIP(u.Hostname()).IsLoopback()
}

// unanswered says, for a call that found nobody listening, where it went,
// and on this machine how to start the local AWS.
func unanswered(err error, cfg aws.Config) error {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return err
	}
	endpoint := aws.ToString(cfg.BaseEndpoint)
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	if loopback(endpoint) {
		return fmt.Errorf("nothing answers at %s: start the local AWS with make local-up (%w)", endpoint, err)
	}
	return err
}

func localStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("ferry local start", stderr)
	stack := fs.String("stack", "", "the deployed stack (required), e.g. Ferry-us-east-1")
	state := fs.String("state", ".local", "state directory: code, logs, pid files")
	bin := fs.String("bin", "dist", "directory holding lambda-emulator and ferry-router")
	ingress := fs.String("ingress", "127.0.0.1:8080", "the router's client address")
	interval := fs.Duration("metrics-interval", 10*time.Second, "the router's metrics interval")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *stack == "" {
		return usagef("local start: -stack is required")
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		return errors.New("AWS_ENDPOINT_URL is not set: ferry local runs against a local AWS only")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	st, err := dataplane.Start(ctx, dataplane.NewClients(cfg), dataplane.Options{
		Stack: *stack, StateDir: *state, BinDir: *bin, Endpoint: endpoint, Region: cfg.Region,
		Ingress: *ingress, MetricsInterval: *interval, Log: stdout,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nsend traffic:   curl %s/work?cpu_ms=5\\&wait_ms=100\n", st.ClientURL)
	// The review as it can be run from here: this binary, this state
	// directory (whose local AWS it then finds by itself).
	stateFlag := ""
	if *state != ".local" {
		stateFlag = " -state " + *state
	}
	for _, f := range st.Functions {
		fmt.Fprintf(stdout, "review metrics: %s metrics -function %s -since 15m%s\n", os.Args[0], f, stateFlag)
	}
	return nil
}
