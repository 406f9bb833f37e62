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

// TestDemo runs make demo's driver briefly over the real binaries: every
// row complete and error-free, and the summary lines there. It does not
// judge the savings, which depend on the machine (make demo and make
// bench show them).
func TestDemo(t *testing.T) {
	dist := t.TempDir()
	bins, err := testbin.Build(dist, "./bootstrap", "./examples/goapp", "./localstack/cmd/lambda-emulator", "./router")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bins[3], filepath.Join(dist, "ferry-router")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runDemo(context.Background(), options{dist: dist}, 1500*time.Millisecond, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, w := range demoWorkloads {
		for _, run := range []string{"ferry", "plain"} {
			// requests, errors, invocations, billed ms
			m := regexp.MustCompile(`(?m)^\s*` + w + ` \(.*\)\s+` + run + `\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)`).FindStringSubmatch(s)
			if m == nil || m[1] == "0" || m[2] != "0" || m[3] == "0" || m[4] == "0" {
				t.Errorf("%s %s row: want requests, no errors, invocations and billed time; output:\n%s", w, run, s)
			}
		}
		if !regexp.MustCompile(`(?m)^` + w + ` .*ferry billed [\d.]+% (less|more) than plain Lambda; p50 [\d.]+x, p99 [\d.]+x`).MatchString(s) {
			t.Errorf("no summary line for %s:\n%s", w, s)
		}
	}
	if !strings.Contains(s, "make bench") {
		t.Errorf("output does not point to make bench:\n%s", s)
	}
}
