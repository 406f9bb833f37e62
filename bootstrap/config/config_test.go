package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/testbin"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.AppPort != 8080 || c.MaxConcurrency != 64 || c.IdleLinger != 2*time.Millisecond || c.IdleLingerSet || !c.CPUAdmission || c.CPUBudget != 0.05 {
		t.Errorf("defaults = %+v", c)
	}
}

func TestLoadRejectsBadValuesNamingTheVariable(t *testing.T) {
	cases := map[string]map[string]string{
		EnvAppPort:        {EnvAppPort: "http"},
		EnvMaxConcurrency: {EnvMaxConcurrency: "0"},
		EnvIdleLinger:     {EnvIdleLinger: "soon"},
		EnvCPUBudget:      {EnvCPUBudget: "1.5"},
		EnvCPUAdmission:   {EnvCPUAdmission: "maybe"},
		EnvReadinessPath:  {EnvReadinessPath: "healthz"},
		EnvLogLevel:       {EnvLogLevel: "loud"},
	}
	for name, vars := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(env(vars))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("Load error = %v, want one naming %s", err, name)
			}
		})
	}
}

func TestDefaultAppCmd(t *testing.T) {
	root := t.TempDir()
	if got := defaultAppCmd(root, "app.handler"); got != "" {
		t.Errorf("empty task root: got %q, want no command", got)
	}
	os.WriteFile(filepath.Join(root, "serve"), []byte("#!/bin/sh\n"), 0o755)
	if got, want := defaultAppCmd(root, "serve"), "'"+filepath.Join(root, "serve")+"'"; got != want {
		t.Errorf("executable handler: got %q, want %q", got, want)
	}
	os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\n"), 0o755)
	if got, want := defaultAppCmd(root, "serve"), "'"+filepath.Join(root, "run.sh")+"'"; got != want {
		t.Errorf("run.sh wins: got %q, want %q", got, want)
	}
}

func TestDrainMarginFor(t *testing.T) {
	cases := map[time.Duration]time.Duration{
		3 * time.Second: time.Second, 60 * time.Second: 6 * time.Second, 15 * time.Minute: 15 * time.Second,
	}
	for timeout, want := range cases {
		if got := (Config{}).DrainMarginFor(timeout); got != want {
			t.Errorf("DrainMarginFor(%v) = %v, want %v", timeout, got, want)
		}
	}
	if got := (Config{DrainMargin: 2 * time.Second}).DrainMarginFor(time.Hour); got != 2*time.Second {
		t.Errorf("explicit margin: got %v", got)
	}
}

// TestREADMEListsEveryVariable keeps README's bootstrap table and Names in
// step, both ways.
func TestREADMEListsEveryVariable(t *testing.T) {
	testbin.CheckEnvTable(t, Names, func(n string) bool {
		return strings.HasPrefix(n, "FERRY_") && !strings.HasPrefix(n, "FERRY_ROUTER_")
	})
}

// FuzzLoad: any environment is a configuration or an error naming the
// variable, never a panic; what loads is usable.
func FuzzLoad(f *testing.F) {
	f.Add(EnvAppPort + "=3000\n" + EnvMaxConcurrency + "=8\n" + EnvIdleLinger + "=0\n" + EnvCPUBudget + "=0.1")
	f.Add(EnvReadinessPath + "=/healthz\n" + EnvLogLevel + "=debug\n" + EnvCPUAdmission + "=off\n" + EnvLoadStream + "=on")
	f.Add(EnvAppPort + "=99999\n" + EnvDrainMargin + "=-1s")
	f.Fuzz(func(t *testing.T, lines string) {
		m := map[string]string{}
		for _, l := range strings.Split(lines, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				m[k] = v
			}
		}
		c, err := Load(env(m))
		if err != nil {
			if !strings.Contains(err.Error(), "FERRY_") && !strings.Contains(err.Error(), "AWS_") {
				t.Fatalf("error names no variable: %v", err)
			}
			return
		}
		if c.AppPort < 1 || c.AppPort > 65535 || c.MaxConcurrency < 1 || c.IdleLinger < 0 || c.CPUBudget <= 0 || c.CPUBudget > 1 {
			t.Fatalf("%q loaded as %+v", lines, c)
		}
	})
}
