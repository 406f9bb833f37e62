package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ferryrun/ferry/internal/review"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/router/config"
)

// TestCommandLine: help and version answer with status 0 on stdout; a
// command line ferry does not take is status 2 with a hint; a command that
// fails at run time is status 1.
func TestCommandLine(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL", "") // local start must fail on its own check, reaching nothing
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--help"}, 0, "ferry metrics -function NAME", ""},
		{[]string{"help"}, 0, "Exit status", ""},
		{[]string{"--version"}, 0, "ferry ", ""},
		{[]string{"version"}, 0, "ferry ", ""},
		{nil, 2, "", "no command"},
		{[]string{"deploy"}, 2, "", `unknown command "deploy" (ferry --help)`},
		{[]string{"metrics"}, 2, "", "-function is required"},
		{[]string{"metrics", "-function", "app", "-period", "90s"}, 2, "", "want a multiple of 1m"},
		{[]string{"metrics", "-function", "app", "-start", "yesterday"}, 2, "", "-start"},
		{[]string{"metrics", "-function", "app", "stray"}, 2, "", `unexpected argument "stray"`},
		{[]string{"metrics", "-bogus"}, 2, "", "flag provided but not defined"},
		{[]string{"metrics", "-h"}, 0, "", "-function"},
		{[]string{"local", "start"}, 2, "", "-stack is required"},
		{[]string{"local", "start", "-stack", "S", "-state", t.TempDir()}, 1, "", "AWS_ENDPOINT_URL is not set"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := exitCode(run(context.Background(), tc.args, &stdout, &stderr), &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// TestFindsTheLocalAWS: with no AWS named in the environment, ferry uses
// the local AWS that make local-up described in the state directory, and
// says so; where nothing answers on this machine it names make local-up.
func TestFindsTheLocalAWS(t *testing.T) {
	endpoint := testbin.Moto(t) // before the environment below, which moto's botocore would read
	for _, k := range []string{"AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		return "http://" + ln.Addr().String()
	}
	describe := func(dir, endpoint string) {
		os.MkdirAll(dir, 0o755)
		b, _ := json.Marshal(map[string]string{"endpoint": endpoint, "region": "us-east-1"})
		if err := os.WriteFile(filepath.Join(dir, localAWSFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("described and running", func(t *testing.T) {
		t.Chdir(t.TempDir())
		describe(".local", endpoint)
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"metrics", "-function", "never-deployed"}, &stdout, &stderr)
		// moto answered: it has no metrics for that function.
		if !errors.Is(err, review.ErrNoFunction) || !strings.Contains(stderr.String(), "using the local AWS at "+endpoint) {
			t.Errorf("err %v, stderr %q; want the local AWS at %s asked, and said", err, stderr.String(), endpoint)
		}
	})
	t.Run("described in another directory", func(t *testing.T) {
		t.Chdir(t.TempDir())
		describe("elsewhere", closed())
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"metrics", "-function", "app", "-state", "elsewhere"}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "make local-up") {
			t.Errorf("err %v; want nothing answering named, with make local-up", err)
		}
	})
	t.Run("an endpoint on this machine that refuses", func(t *testing.T) {
		t.Chdir(t.TempDir())
		t.Setenv("AWS_ENDPOINT_URL", closed())
		t.Setenv("AWS_ACCESS_KEY_ID", "test")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
		t.Setenv("AWS_REGION", "us-east-1")
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"metrics", "-function", "app"}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "nothing answers at") || strings.Contains(stderr.String(), "using the local AWS") {
			t.Errorf("err %v, stderr %q; want the refusing endpoint named", err, stderr.String())
		}
	})
	t.Run("set up for a real account: the local AWS is not used", func(t *testing.T) {
		t.Chdir(t.TempDir())
		describe(".local", endpoint)
		creds := filepath.Join(t.TempDir(), "credentials")
		os.WriteFile(creds, []byte("[default]\n"), 0o600)
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
		t.Setenv("AWS_REGION", "us-east-1")
		var stderr bytes.Buffer
		cfg, err := awsConfig(context.Background(), ".local", &stderr)
		if err != nil || cfg.BaseEndpoint != nil || strings.Contains(stderr.String(), "using the local AWS") {
			t.Errorf("endpoint %v, err %v, stderr %q: want the SDK's own configuration", aws.ToString(cfg.BaseEndpoint), err, stderr.String())
		}
	})
	t.Run("a description pointing off this machine", func(t *testing.T) {
		t.Chdir(t.TempDir())
		describe(".local", "http://203.0.113.7:4566")
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"metrics", "-function", "app"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "does not describe a local AWS") {
			t.Errorf("err %v; want an endpoint off this machine refused", err)
		}
	})
	t.Run("a description that is not one", func(t *testing.T) {
		t.Chdir(t.TempDir())
		os.MkdirAll(".local", 0o755)
		os.WriteFile(filepath.Join(".local", localAWSFile), []byte("{"), 0o644)
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"metrics", "-function", "app"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "does not describe a local AWS") {
			t.Errorf("err %v; want the bad description named", err)
		}
	})
}

// useLocalAWS starts a local AWS (moto) for the test and points the
// environment at it, as a user's AWS configuration would be, from an empty
// working directory; it returns the configuration ferry then uses.
func useLocalAWS(t *testing.T) aws.Config {
	t.Helper()
	endpoint := testbin.Moto(t)
	for _, k := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_ENDPOINT_URL", endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Chdir(t.TempDir())
	cfg, err := awsConfig(t.Context(), ".local", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRoutesCommand: ferry routes edits the routes parameter (moto's SSM),
// refuses what a router could not use or what is not there, and lists what
// is.
func TestRoutesCommand(t *testing.T) {
	useLocalAWS(t)
	ferry := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := exitCode(run(context.Background(), args, &stdout, &stderr), &stderr)
		return code, stdout.String(), stderr.String()
	}
	if code, _, stderr := ferry("routes", "list"); code != 1 || !strings.Contains(stderr, "no routes parameter /ferry/Ferry-us-east-1/routes: deploy the stack first") {
		t.Fatalf("list before the stack: exit %d, %q; want 1 naming the missing parameter", code, stderr)
	}
	// What the stack creates.
	cfg, err := awsConfig(context.Background(), ".local", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ssm.NewFromConfig(cfg).PutParameter(t.Context(), &ssm.PutParameterInput{Name: aws.String("/ferry/Ferry-us-east-1/routes"),
		Value: aws.String(`{"routes": []}`), Type: ssmtypes.ParameterTypeString}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		args   []string
		code   int
		output string
	}{
		{[]string{"routes", "add", "-function", "api", "-host", "api.example.com", "-path", "/v1", "-policy", "spread"}, 0, "route added: api.example.com/v1 -> api"},
		{[]string{"routes", "add", "-function", "web", "-path", "/"}, 0, "route added"},
		{[]string{"routes", "add", "-function", "api", "-host", "api.example.com", "-path", "/v1"}, 1, "already routes"},
		{[]string{"routes", "add", "-function", "other", "-host", "API.example.com", "-path", "/v1/"}, 1, "already routes api.example.com/v1 to api"},
		{[]string{"routes", "add", "-function", "api", "-path", "/v2", "-policy", "pack"}, 2, "policy spread on one route, pack on another"},
		{[]string{"routes", "add", "-function", "bad", "-path", "v1"}, 2, "must start with /"},
		{[]string{"routes", "add", "-host", "x"}, 2, "-function is required"},
		{[]string{"routes", "list"}, 0, "api       api.example.com  /v1   policy=spread"},
		{[]string{"routes", "remove", "-function", "web", "-path", "/"}, 0, "route removed"},
		{[]string{"routes", "remove", "-function", "web", "-path", "/"}, 1, "has no route"},
		{[]string{"routes", "list", "-stack", "Other"}, 1, "no routes parameter /ferry/Other/routes"},
		{[]string{"routes", "rename"}, 2, "want list, add or remove"},
	} {
		code, stdout, stderr := ferry(step.args...)
		if code != step.code || !strings.Contains(stdout+stderr, step.output) {
			t.Errorf("ferry %s: exit %d, %q %q; want exit %d with %q", strings.Join(step.args, " "), code, stdout, stderr, step.code, step.output)
		}
	}
	// What the routers read: a routes document they accept.
	out, err := ssm.NewFromConfig(cfg).GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/ferry/Ferry-us-east-1/routes")})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := config.ParseRoutesDocument([]byte(aws.ToString(out.Parameter.Value)))
	if err != nil || len(rs) != 1 || rs[0].Function != "api" || rs[0].Host != "api.example.com" || rs[0].PathPrefix != "/v1" || rs[0].Policy != "spread" {
		t.Errorf("parameter holds %q (%v); want the one api route", aws.ToString(out.Parameter.Value), err)
	}
}

// TestConcurrentRouteEdits: edits of the routes parameter made at once all
// stand (SSM has no conditional write: an edit that another undid is made
// again).
func TestConcurrentRouteEdits(t *testing.T) {
	cfg := useLocalAWS(t)
	api := ssm.NewFromConfig(cfg)
	const name = "/ferry/Ferry-us-east-1/routes"
	if _, err := api.PutParameter(t.Context(), &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(`{"routes": []}`), Type: ssmtypes.ParameterTypeString}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rt := config.Route{Function: fmt.Sprintf("fn%d", i), Host: fmt.Sprintf("h%d.example", i)}
			if _, err := changeRoutes(t.Context(), api, name, addRoute(rt), io.Discard); err != nil {
				t.Errorf("adding %v: %v", rt, err)
			}
		})
	}
	wg.Wait()
	got, _, err := readRoutes(t.Context(), api, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Errorf("%d routes after %d concurrent adds: %+v", len(got), n, got)
	}
}
