package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryrun/ferry/internal/review"
	"github.com/ferryrun/ferry/internal/testbin"
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
