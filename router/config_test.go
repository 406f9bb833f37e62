package main_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ferryrun/ferry/internal/testbin"
)

// TestCommandLines: the router and the emulator answer --help and
// --version, and refuse what they do not take with status 2, before
// starting anything (the router once served when asked for help).
func TestCommandLines(t *testing.T) {
	routerEnv := append(os.Environ(), "FERRY_ROUTER_ROUTES=app=/", "FERRY_ROUTER_LISTEN=127.0.0.1:0",
		"FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0", "FERRY_ROUTER_ADMIN_LISTEN=127.0.0.1:0", "AWS_REGION=us-east-1")
	for _, tc := range []struct {
		name           string
		bin            string
		args           []string
		code           int
		stdout, stderr string
	}{
		{"router help", bins.router, []string{"--help"}, 0, "FERRY_ROUTER_QUEUE_TIMEOUT", ""},
		{"router help word", bins.router, []string{"help"}, 0, "usage:", ""},
		{"router version", bins.router, []string{"--version"}, 0, "ferry-router ", ""},
		{"router argument", bins.router, []string{"serve"}, 2, "", `unknown argument "serve"`},
		{"emulator help", bins.emulator, []string{"--help"}, 0, "-config", ""},
		{"emulator version", bins.emulator, []string{"--version"}, 0, "lambda-emulator ", ""},
		{"emulator without config", bins.emulator, nil, 2, "", "-config is required"},
		{"emulator unknown flag", bins.emulator, []string{"-conf", "x"}, 2, "", "flag provided but not defined"},
		{"emulator config missing", bins.emulator, []string{"-config", filepath.Join(t.TempDir(), "none.json")}, 1, "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tc.bin, tc.args...)
			cmd.Env = routerEnv
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, tail(stdout.String(), 300), tail(stderr.String(), 300), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// TestMisspeltSettingIsNamed: a FERRY_ROUTER_ variable the router does not
// read is warned about with the name meant, never silently ignored.
func TestMisspeltSettingIsNamed(t *testing.T) {
	cmd := exec.Command(bins.router)
	cmd.Env = append(os.Environ(), "FERRY_ROUTER_ROUTES=app=/", "FERRY_ROUTER_LISTEN=127.0.0.1:0",
		"FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0", "FERRY_ROUTER_ADMIN_LISTEN=127.0.0.1:0", "AWS_REGION=us-east-1",
		"FERRY_ROUTER_QUEUE_TIMOUT=5s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	found := make(chan string, 1)
	go func() {
		var seen []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if strings.Contains(sc.Text(), "FERRY_ROUTER_QUEUE_TIMOUT") {
				found <- sc.Text()
				io.Copy(io.Discard, stderr)
				return
			}
		}
		found <- "no warning in:\n" + strings.Join(seen, "\n")
	}()
	select {
	case line := <-found:
		if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, "did you mean FERRY_ROUTER_QUEUE_TIMEOUT?") || strings.Contains(line, "5s") {
			t.Errorf("want a warning naming FERRY_ROUTER_QUEUE_TIMEOUT, without the value; got %s", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no warning within 10s")
	}
}

// TestPeerListMustNameThisReplica: a replica missing from its own static
// peer list (or named otherwise there) would probe itself as a peer; it
// refuses to start, saying why.
func TestPeerListMustNameThisReplica(t *testing.T) {
	cmd := exec.Command(bins.router)
	cmd.Env = append(os.Environ(), "FERRY_ROUTER_ROUTES=app=/", "FERRY_ROUTER_LISTEN=127.0.0.1:0",
		"FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0", "FERRY_ROUTER_ADMIN_LISTEN=127.0.0.1:0", "AWS_REGION=us-east-1",
		"FERRY_ROUTER_PEER_LISTEN=127.0.0.1:0", "FERRY_ROUTER_PEERS=127.0.0.2:8444,127.0.0.3:8444",
		"FERRY_ROUTER_TOKEN_SECRET="+strings.Repeat("k", 32))
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("exit %d (%v), want 1; output:\n%s", code, err, out)
	}
	if !strings.Contains(string(out), "is not in the list") || !strings.Contains(string(out), "FERRY_ROUTER_PEERS") {
		t.Errorf("the error does not say this replica is missing from FERRY_ROUTER_PEERS:\n%s", out)
	}
}

// TestRoutesFromParameter: routes kept in an SSM parameter (moto here)
// serve within seconds of being written, with no restart; a document that
// cannot be used leaves the routes in force and is named in the log; a
// route removed there stops serving.
func TestRoutesFromParameter(t *testing.T) {
	endpoint := testbin.Moto(t)
	params := ssm.New(ssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		})})
	const name = "/ferry/test/routes"
	put := func(doc string) {
		t.Helper()
		if _, err := params.PutParameter(t.Context(), &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(doc),
			Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
	}
	put(`{"routes": []}`)
	s := startStack(t, stackOpts{routerEnv: map[string]string{
		"FERRY_ROUTER_ROUTES": "app=/echo", "FERRY_ROUTER_ROUTES_PARAMETER": name, "FERRY_ROUTER_ROUTES_POLL": "1s",
		"AWS_ENDPOINT_URL": endpoint, "FERRY_ROUTER_LOG_LEVEL": "debug", // each poll logged
	}})
	// until waits up to 5 s for GET /work to answer want.
	until := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := s.get("/work")
			if got.status == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /work: %d %q %v; want %d within 5s", got.status, got.body, got.err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := s.get("/work"); got.status != http.StatusNotFound {
		t.Fatalf("GET /work before any route: %d, want 404", got.status)
	}
	if got := s.get("/echo"); got.status != http.StatusOK {
		t.Fatalf("GET /echo (the configured route): %d %q, want 200", got.status, got.body)
	}
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	until(http.StatusOK)

	// A minimum of live instances changes live, both ways: no restart.
	warmNow := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			p := s.pool()
			if n, _ := warm(p); n == want && p.MinInstances == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %d warm instances within 10s of the parameter asking: %+v", want, p)
			}
		}
	}
	put(`{"routes": [{"function": "app", "path_prefix": "/work", "min_instances": 1}]}`)
	warmNow(1)
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	warmNow(0)
	// Kept only between UTC hours: none outside them, the minimum inside.
	h := time.Now().UTC().Hour()
	launched := s.pool().Stats.Launches
	put(fmt.Sprintf(`{"routes": [{"function": "app", "path_prefix": "/work", "min_instances": 1, "min_instances_hours": "%d-%d"}]}`, (h+1)%24, (h+2)%24))
	time.Sleep(2500 * time.Millisecond) // a poll or two: nothing may launch
	warmNow(0)
	if n := s.pool().Stats.Launches - launched; n != 0 {
		t.Errorf("%d launches for a minimum outside its hours, want none", n)
	}
	put(fmt.Sprintf(`{"routes": [{"function": "app", "path_prefix": "/work", "min_instances": 1, "min_instances_hours": "%d-%d"}]}`, h, h+1))
	warmNow(1)
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	warmNow(0)
	if strings.Contains(s.routerLog.String(), "take effect when the router restarts") {
		t.Error("the router said a changed min_instances waits for a restart")
	}

	put(`{"routes": [{"function": "app", "path_prefix": "work"}]}`)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.routerLog.String(), `must start with /`) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning for a bad routes document; router log:\n%s", tail(s.routerLog.String(), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := s.get("/work"); got.status != http.StatusOK {
		t.Errorf("GET /work after a bad document: %d, want the route in force to stay", got.status)
	}

	put(`{"routes": []}`)
	until(http.StatusNotFound)
	if got := s.get("/echo"); got.status != http.StatusOK {
		t.Errorf("GET /echo after the parameter emptied: %d, want the configured route to stay", got.status)
	}

	// Deleted, the parameter takes its routes with it, and says so once;
	// made again (its version starts again at 1), it is read again.
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	until(http.StatusOK)
	if _, err := params.DeleteParameter(t.Context(), &ssm.DeleteParameterInput{Name: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	until(http.StatusNotFound)
	polls := func() int { return strings.Count(s.routerLog.String(), "routes parameter polled") }
	for deadline, then := time.Now().Add(10*time.Second), polls(); polls() < then+3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the router polled %d times in 10 s with a 1 s poll", polls()-then)
		}
	}
	warned := 0
	for l := range strings.SplitSeq(s.routerLog.String(), "\n") {
		if strings.Contains(l, `"level":"WARN"`) && strings.Contains(l, "does not exist") {
			warned++
		}
	}
	if n := warned; n != 1 {
		t.Errorf("%d warnings that the parameter does not exist over several polls, want 1", n)
	}
	put(`{"routes": [{"function": "app", "path_prefix": "/work"}]}`)
	until(http.StatusOK)
}
