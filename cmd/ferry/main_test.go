package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
