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
