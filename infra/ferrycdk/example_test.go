package ferrycdk_test

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferryrun/ferry/internal/testbin"
)

// TestExampleAppFromItsOwnModule: a user's own CDK app (examples/cdk-app,
// a Go module of its own that imports ferry's constructs) synthesizes from
// outside this repository, with no dist/: ferry's layer built at synth
// from the module's source, the router image from its Dockerfile, and the
// user's function attached: layer, its own environment kept, invoke
// permission, route, and a tunnel rule from the security group the
// function carries. Importing the constructs once panicked for want of
// dist/ and router/Dockerfile in the app's directory.
func TestExampleAppFromItsOwnModule(t *testing.T) {
	repo := testbin.ModuleRoot()
	app := t.TempDir()
	src := filepath.Join(repo, "examples", "cdk-app")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() == "cdk.out" {
			return cmpSkip(err, d)
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(app, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if rel == "go.mod" { // the replace, from wherever the app now is
			b = []byte(strings.Replace(string(b), "=> ../..", "=> "+repo, 1))
		}
		info, _ := d.Info()
		return os.WriteFile(filepath.Join(app, rel), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "go", "run", ".")
	cmd.Dir = app
	cmd.Env = append(os.Environ(), "CDK_OUTDIR="+out, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20", "ROUTER_IMAGE=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("synth of the example app from %s: %v\n%s", app, err, b)
	}
	if _, err := os.Stat(filepath.Join(app, "dist")); err == nil {
		t.Fatal("the app has a dist/: the test proves nothing")
	}

	var tmpl struct {
		Resources map[string]struct {
			Type       string
			Properties map[string]any
		}
	}
	readJSON(t, filepath.Join(out, "MyApi.template.json"), &tmpl)
	ids := func(typ string) []string {
		var out []string
		for id, r := range tmpl.Resources {
			if r.Type == typ {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return out
	}
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }

	// The function: ferry's arm64 layer, its own variable kept beside ferry's.
	var api string
	for _, id := range ids("AWS::Lambda::Function") {
		if strings.HasPrefix(id, "Api") {
			api = id
		}
	}
	if api == "" {
		t.Fatalf("no Api function among %v", ids("AWS::Lambda::Function"))
	}
	fn := tmpl.Resources[api].Properties
	env := js(fn["Environment"])
	for _, want := range []string{`"GREETING":"hello"`, `"AWS_LAMBDA_EXEC_WRAPPER":"/opt/ferry-exec-wrapper"`, `"FERRY_READINESS_PATH":"/healthz"`} {
		if !strings.Contains(env, want) {
			t.Errorf("function environment %s lacks %s", env, want)
		}
	}
	if layers := js(fn["Layers"]); !strings.Contains(layers, `"Ref":"FerryLayerArm64`) {
		t.Errorf("function layers %s: want ferry's arm64 layer", layers)
	}

	// The layer, built at synth: the zip the template deploys holds the
	// bootstrap, the exec wrapper and the version.
	var assets struct {
		Files map[string]struct {
			Source struct{ Path, Packaging string }
		}
		DockerImages map[string]struct {
			Source struct {
				Directory, DockerFile string
				DockerBuildArgs       map[string]string
			}
		}
	}
	readJSON(t, filepath.Join(out, "MyApi.assets.json"), &assets)
	var layerZips int
	for _, a := range assets.Files {
		if !strings.HasSuffix(a.Source.Path, ".zip") {
			continue
		}
		zr, err := zip.OpenReader(filepath.Join(out, a.Source.Path))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range zr.File {
			names = append(names, f.Name)
		}
		zr.Close()
		if slices.Equal(names, []string{"bootstrap", "ferry-exec-wrapper", "ferry-version"}) {
			layerZips++
		}
	}
	if layerZips != 2 {
		t.Errorf("%d layer zips among the assets %v, want one per architecture", layerZips, assets.Files)
	}
	// The router image, from ferry's own Dockerfile.
	if len(assets.DockerImages) != 1 {
		t.Fatalf("docker image assets %v: want the router's", assets.DockerImages)
	}
	for _, img := range assets.DockerImages {
		if _, err := os.Stat(filepath.Join(out, img.Source.Directory, img.Source.DockerFile)); err != nil || img.Source.DockerFile != "router/Dockerfile" {
			t.Errorf("router image from %s in %s: %v", img.Source.DockerFile, img.Source.Directory, err)
		}
	}

	// The route, on the router's tasks.
	var routes string
	for _, id := range ids("AWS::ECS::TaskDefinition") {
		for _, c := range tmpl.Resources[id].Properties["ContainerDefinitions"].([]any) {
			for _, e := range c.(map[string]any)["Environment"].([]any) {
				if e := e.(map[string]any); e["Name"] == "FERRY_ROUTER_ROUTES" {
					routes = js(e["Value"])
				}
			}
		}
	}
	if !strings.Contains(routes, fmt.Sprintf(`{"Ref":"%s"}`, api)) || !strings.Contains(routes, "=api.example.com/") {
		t.Errorf("FERRY_ROUTER_ROUTES = %s: want the Api function for api.example.com", routes)
	}
	// The router's role may invoke it.
	var invoke bool
	for _, id := range ids("AWS::IAM::Policy") {
		doc := js(tmpl.Resources[id].Properties["PolicyDocument"])
		if strings.HasPrefix(id, "RouterTaskRole") && strings.Contains(doc, "lambda:InvokeFunction") && strings.Contains(doc, api) {
			invoke = true
		}
	}
	if !invoke {
		t.Error("no policy on the router's task role lets it invoke the Api function")
	}
	// The tunnel port is open from a security group the function carries.
	fnGroups := js(fn["VpcConfig"])
	var open bool
	for _, id := range ids("AWS::EC2::SecurityGroupIngress") {
		p := tmpl.Resources[id].Properties
		if p["FromPort"] == float64(8443) && strings.Contains(fnGroups, js(p["SourceSecurityGroupId"])) {
			open = true
		}
	}
	if !open {
		t.Errorf("no ingress on the tunnel port from the function's security groups %s", fnGroups)
	}
}

func cmpSkip(err error, d fs.DirEntry) error {
	if err != nil {
		return err
	}
	if d.IsDir() {
		return filepath.SkipDir
	}
	return nil
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
