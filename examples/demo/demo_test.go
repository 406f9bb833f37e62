package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/testbin"
)

// TestDemoPrintsTable runs the demo driver briefly over the real binaries.
// It checks the table is complete and the runs error-free; it does not
// judge the savings, which depend on the machine (make demo shows them).
func TestDemoPrintsTable(t *testing.T) {
	dist := t.TempDir()
	bins, err := testbin.Build(dist, "./bootstrap", "./examples/goapp", "./localstack/cmd/lambda-emulator", "./router")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bins[3], filepath.Join(dist, "ferry-router")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	o := options{dist: dist, duration: 2 * time.Second, concurrency: 2, limit: 10, path: "/work?cpu_ms=5&wait_ms=20"}
	if err := run(context.Background(), o, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"billed ms/request", "compute saved =", "p99 latency ferry / limit-1"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	for _, run := range []string{"ferry", "single"} {
		m := regexp.MustCompile(`(?m)^\s+` + run + `\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(s)
		if m == nil || m[1] == "0" || m[2] != "0" || m[3] == "0" {
			t.Errorf("%s row: want requests > 0, 0 errors, invocations > 0; output:\n%s", run, s)
		}
	}
}
