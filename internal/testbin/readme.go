package testbin

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var envRow = regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\|")

// CheckEnvTable fails t unless README.md's configuration tables and a
// binary's variables agree both ways: every name in names has a row, and
// every row the binary owns (owns(name)) is a name it reads.
func CheckEnvTable(t testing.TB, names []string, owns func(string) bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ModuleRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range envRow.FindAllStringSubmatch(string(b), -1) {
		if owns(m[1]) {
			documented[m[1]] = true
		}
	}
	read := map[string]bool{}
	for _, n := range names {
		read[n] = true
		if !documented[n] {
			t.Errorf("README lacks a table row for %s", n)
		}
	}
	for n := range documented {
		if !read[n] {
			t.Errorf("README documents %s, which the code does not read", n)
		}
	}
}
