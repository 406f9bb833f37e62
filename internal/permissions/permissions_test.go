package permissions

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ferryrun/ferry/internal/testbin"
)

// calls returns the IAM actions of every aws-sdk-go-v2 operation whose
// input type the non-test Go files under dirs mention.
func calls(t *testing.T, dirs ...string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(testbin.ModuleRoot(), dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			if err != nil {
				return err
			}
			services := map[string]string{} // local import name -> service
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				svc, ok := strings.CutPrefix(p, "github.com/aws/aws-sdk-go-v2/service/")
				if !ok || strings.Contains(svc, "/") {
					continue
				}
				name := svc
				if imp.Name != nil {
					name = imp.Name.Name
				}
				services[name] = svc
			}
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, ok := sel.X.(*ast.Ident)
				op, isInput := strings.CutSuffix(sel.Sel.Name, "Input")
				if !ok || !isInput || services[pkg.Name] == "" {
					return true
				}
				as, known := Actions(services[pkg.Name], op)
				if !known {
					t.Errorf("%s calls %s.%s, a service this package does not map", path, services[pkg.Name], op)
				}
				for _, a := range as {
					seen[a] = true
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestListsMatchTheCode(t *testing.T) {
	cases := map[string]struct {
		dirs []string
		list []string
	}{
		"ferry-router": {[]string{"router"}, append(Router(), RouterPublicTunnel()...)},
		"ferry CLI":    {[]string{"cmd/ferry", "internal/review"}, append(CLI(), Attach()...)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got, want := calls(t, tc.dirs...), sorted(tc.list); !slices.Equal(got, want) {
				t.Errorf("%s's code calls %v; its list says %v", name, got, want)
			}
		})
	}
}

// README tells users attaching a function and running the CLI which
// actions to grant: the same as the lists.
func TestREADMENamesTheActions(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testbin.ModuleRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range slices.Concat(Router(), RouterPublicTunnel(), CLI(), Attach(), AttachImplied()) {
		if !strings.Contains(string(b), "`"+a+"`") {
			t.Errorf("README does not name %s", a)
		}
	}
}
