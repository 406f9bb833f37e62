package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/testbin"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoad(t *testing.T) {
	c, err := Load(env(map[string]string{EnvRoutes: "app=/, api=api.example.com/v1", EnvTunnelListen: "127.0.0.1:0"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 2 || c.Routes[1] != (Route{Function: "api", Host: "api.example.com", PathPrefix: "/v1"}) {
		t.Errorf("routes = %+v", c.Routes)
	}
	if c.Advertise != "127.0.0.1:0" || c.MaxConcurrency != 64 || c.IdleLinger != 2*time.Millisecond || c.Policy != "pack" {
		t.Errorf("config = %+v", c)
	}
	c, err = Load(env(map[string]string{EnvRoutes: "app=/", EnvTunnelListen: "127.0.0.1:0", EnvTrustedProxies: "10.0.3.7/16, 127.0.0.1/32"}))
	if err != nil || fmt.Sprint(c.TrustedProxies) != "[10.0.0.0/16 127.0.0.1/32]" {
		t.Errorf("%s: %v, %v", EnvTrustedProxies, c.TrustedProxies, err)
	}
	if c.AdminListen != "127.0.0.1:9090" {
		t.Errorf("admin listens on %s by default, want loopback", c.AdminListen)
	}
	if c, err := Load(env(map[string]string{EnvRoutes: "app=/", EnvTunnelListen: "127.0.0.1:0", EnvPprof: "true"})); err != nil || !c.Pprof {
		t.Errorf("pprof on the loopback admin listener: %v", err)
	}
	for v, want := range map[string][2]bool{"": {true, false}, "cloudwatch": {false, true}, "emf, cloudwatch": {true, true}, "off": {}} {
		c, err := Load(env(map[string]string{EnvRoutes: "app=/", EnvTunnelListen: "127.0.0.1:0", EnvMetrics: v}))
		if err != nil || [2]bool{c.MetricsEMF, c.MetricsCloudWatch} != want {
			t.Errorf("%s=%q: emf, cloudwatch = %v, %v, %v; want %v", EnvMetrics, v, c.MetricsEMF, c.MetricsCloudWatch, err, want)
		}
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	base := func(m map[string]string) map[string]string {
		m[EnvTunnelListen] = "127.0.0.1:0"
		if _, ok := m[EnvRoutes]; !ok {
			m[EnvRoutes] = "app=/"
		}
		return m
	}
	cases := map[string]map[string]string{
		EnvRoutes:         base(map[string]string{EnvRoutes: "app"}),
		EnvPolicy:         base(map[string]string{EnvPolicy: "random"}),
		EnvQueueTimeout:   base(map[string]string{EnvQueueTimeout: "forever"}),
		EnvTokenSecret:    base(map[string]string{EnvTokenSecret: "abcd"}),
		EnvMaxConcurrency: base(map[string]string{EnvMaxConcurrency: "0"}),
		EnvTLSCert:        base(map[string]string{EnvTLSCert: "cert.pem"}),
		EnvConfigFile:     base(map[string]string{EnvConfigFile: "/does/not/exist.json"}),
		EnvMetrics:        base(map[string]string{EnvMetrics: "emf,statsd"}),
		EnvTrustedProxies: base(map[string]string{EnvTrustedProxies: "10.0.0.0/16,the-alb"}),
		EnvPprof:          base(map[string]string{EnvPprof: "true", EnvAdminListen: ":9090"}),
		EnvPeers:          base(map[string]string{EnvPeers: "10.0.0.1:8444,10.0.0.2", EnvTokenSecret: strings.Repeat("s", 32)}),
		EnvPeerAdvertise:  base(map[string]string{EnvPeers: "10.0.0.1:8444", EnvPeerAdvertise: "10.0.0.1", EnvTokenSecret: strings.Repeat("s", 32)}),
		EnvOwnerConc:      base(map[string]string{EnvOwnerConc: "0"}),
	}
	for name, vars := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Load(env(vars))
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("error = %v, want one naming %s", err, name)
			}
			if name == EnvTokenSecret && strings.Contains(err.Error(), "abcd") {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
	if _, err := Load(env(map[string]string{EnvRoutes: "app=/"})); err == nil || !strings.Contains(err.Error(), EnvAdvertise) {
		t.Errorf("wildcard tunnel listen without advertise: error = %v", err)
	}
}

func TestPeers(t *testing.T) {
	secret := strings.Repeat("s", 32)
	for _, tc := range []struct {
		peers, secret string
		want          string // the peers or Cloud Map service read, or the error's words
	}{
		{"", "", "[] <nil>"},
		{"10.0.0.1:8444, 10.0.0.2:8444", secret, "[10.0.0.1:8444 10.0.0.2:8444] <nil>"},
		{"cloudmap:ferry.internal/router", secret, "[] &{ferry.internal router}"},
		{"cloudmap:ferry.internal", secret, "want cloudmap:NAMESPACE/SERVICE"},
		{"cloudmap:/router", secret, "want cloudmap:NAMESPACE/SERVICE"},
		{"10.0.0.1:0", secret, "want host:port"},
		{"10.0.0.1:8444", "", "set the same secret on every replica"},
	} {
		c, err := Load(env(map[string]string{EnvRoutes: "app=/", EnvTunnelListen: "127.0.0.1:0", EnvPeers: tc.peers, EnvTokenSecret: tc.secret}))
		got := fmt.Sprint(c.Peers, " ", c.CloudMap)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s=%q: got %q, want %q", EnvPeers, tc.peers, got, tc.want)
		}
		if err == nil && c.Ring() != (tc.peers != "") {
			t.Errorf("%s=%q: Ring() = %v", EnvPeers, tc.peers, c.Ring())
		}
	}
}

func TestREADMEListsEveryVariable(t *testing.T) {
	testbin.CheckEnvTable(t, Names, func(n string) bool { return strings.HasPrefix(n, "FERRY_ROUTER_") })
}

// One pool serves all of a function's routes: the options any route sets
// apply to all, and routes that disagree are refused, never dropped.
func TestRouteOptionsPerFunction(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, fmt.Sprint(len(body), ".json"))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string]struct {
		routes, file string
		wantErr      string
		want         map[string]Route // by path prefix
	}{
		"options on the second route apply to the first": {
			routes: "app=/a", file: `{"routes":[{"function":"app","path_prefix":"/b","max_concurrency":16,"policy":"spread","plain":"off"}]}`,
			want: map[string]Route{"/a": {Function: "app", PathPrefix: "/a", MaxConcurrency: 16, Policy: "spread", Plain: "off"},
				"/b": {Function: "app", PathPrefix: "/b", MaxConcurrency: 16, Policy: "spread", Plain: "off"}},
		},
		"conflicting concurrency": {
			file:    `{"routes":[{"function":"app","path_prefix":"/a","max_concurrency":8},{"function":"app","path_prefix":"/b","max_concurrency":16}]}`,
			wantErr: "max_concurrency 8 on one route, 16 on another",
		},
		"conflicting plain": {
			file:    `{"routes":[{"function":"app","path_prefix":"/a","plain":"off"},{"function":"app","path_prefix":"/b","plain":"auto"}]}`,
			wantErr: "plain off on one route, auto on another",
		},
		"bad plain": {
			file:    `{"routes":[{"function":"app","plain":"never"}]}`,
			wantErr: `plain "never": want auto or off`,
		},
		"conflicting policy": {
			file:    `{"routes":[{"function":"app","path_prefix":"/a","policy":"pack"},{"function":"app","path_prefix":"/b","policy":"spread"}]}`,
			wantErr: "policy pack on one route, spread on another",
		},
		"min_instances on one route holds for all": {
			routes: "app=/a", file: `{"routes":[{"function":"app","path_prefix":"/b","min_instances":2}]}`,
			want: map[string]Route{"/a": {Function: "app", PathPrefix: "/a", MinInstances: 2},
				"/b": {Function: "app", PathPrefix: "/b", MinInstances: 2}},
		},
		"conflicting min_instances": {
			file:    `{"routes":[{"function":"app","path_prefix":"/a","min_instances":1},{"function":"app","path_prefix":"/b","min_instances":3}]}`,
			wantErr: "min_instances 1 on one route, 3 on another",
		},
		"min_instances beyond the bound": {
			file:    `{"routes":[{"function":"app","min_instances":1000}]}`,
			wantErr: "min_instances 1000 outside 0..100",
		},
		"min_instances_hours malformed": {
			file:    `{"routes":[{"function":"app","min_instances":1,"min_instances_hours":"8-8"}]}`,
			wantErr: `min_instances_hours "8-8": want two different UTC hours`,
		},
		"conflicting min_instances_hours": {
			file:    `{"routes":[{"function":"app","path_prefix":"/a","min_instances_hours":"8-20"},{"function":"app","path_prefix":"/b","min_instances_hours":"9-17"}]}`,
			wantErr: "min_instances_hours 8-20 on one route, 9-17 on another",
		},
		"negative min_instances": {
			file:    `{"routes":[{"function":"app","min_instances":-1}]}`,
			wantErr: "min_instances -1 outside 0..100",
		},
		"other functions keep their own": {
			file: `{"routes":[{"function":"app","path_prefix":"/a","max_concurrency":8},{"function":"api","path_prefix":"/b"}]}`,
			want: map[string]Route{"/a": {Function: "app", PathPrefix: "/a", MaxConcurrency: 8},
				"/b": {Function: "api", PathPrefix: "/b"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			vars := map[string]string{EnvTunnelListen: "127.0.0.1:0"}
			if tc.routes != "" {
				vars[EnvRoutes] = tc.routes
			}
			if tc.file != "" {
				vars[EnvConfigFile] = write(tc.file)
			}
			c, err := Load(env(vars))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range c.Routes {
				if want := tc.want[r.PathPrefix]; r != want {
					t.Errorf("route %+v, want %+v", r, want)
				}
			}
		})
	}
}

// FuzzRoutes: any FERRY_ROUTER_ROUTES value is routes or an error naming
// what is wrong, never a panic; every route parsed has a function and a
// rooted path prefix.
func FuzzRoutes(f *testing.F) {
	for _, s := range []string{"app=/", "app=/, api=api.example.com/v1", "web=example.com", "=/", "a=", "a=b=c", ",,", "app=/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRoutes(s)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.Function == "" || (r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/")) {
				t.Fatalf("%q gave route %+v", s, r)
			}
		}
	})
}

// FuzzRoutesFile: any FERRY_ROUTER_CONFIG file is routes or an error.
func FuzzRoutesFile(f *testing.F) {
	f.Add([]byte(`{"routes": [{"function": "app", "path_prefix": "/", "max_concurrency": 16, "policy": "pack"}, {"function": "api", "host": "api.example.com", "policy": "spread", "plain": "off"}]}`))
	f.Add([]byte(`{"routes": [{"function": "app", "max_concurrency": -1}]}`))
	f.Add([]byte(`{"routes": [{"function": "app", "policy": "x"}, {"function": "app", "policy": "spread"}]}`))
	f.Add([]byte(`{"routes": null, "extra": 1}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "routes.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(env(map[string]string{EnvConfigFile: path, EnvTunnelListen: "127.0.0.1:0"}))
		if err != nil {
			return
		}
		for _, r := range c.Routes {
			if r.Function == "" || r.MaxConcurrency < 0 {
				t.Fatalf("%s gave route %+v", data, r)
			}
		}
	})
}

// FuzzLoad: any environment is a configuration or an error naming the
// variable, never a panic.
func FuzzLoad(f *testing.F) {
	f.Add(EnvRoutes + "=app=/\n" + EnvTunnelListen + "=127.0.0.1:0\n" + EnvMaxConcurrency + "=8\n" + EnvIdleLinger + "=1ms")
	f.Add(EnvRoutes + "=app=/\n" + EnvTrustedProxies + "=10.0.0.0/8,::1/128\n" + EnvAdvertise + "=10.0.0.1:8443")
	f.Add(EnvRoutes + "=app=/\n" + EnvQueueTimeout + "=-1s\n" + EnvPolicy + "=spread")
	f.Fuzz(func(t *testing.T, lines string) {
		m := map[string]string{}
		for _, l := range strings.Split(lines, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok && k != EnvConfigFile && k != EnvTLSCert && k != EnvTLSKey {
				m[k] = v
			}
		}
		c, err := Load(env(m))
		if err != nil {
			return
		}
		if len(c.Routes) == 0 || c.MaxConcurrency < 1 || c.QueueTimeout <= 0 {
			t.Fatalf("%q loaded as %+v", lines, c)
		}
	})
}

// TestRouteFunctionNames: a route names a Lambda function by name or ARN;
// anything else (a routes parameter is written by hand) is refused before
// it reaches an invoke or a metrics dimension.
func TestRouteFunctionNames(t *testing.T) {
	for _, tc := range []struct {
		doc string
		ok  bool
	}{
		{`{"routes": [{"function": "my-api_2"}]}`, true},
		{`{"routes": [{"function": "arn:aws:lambda:us-east-1:123456789012:function:my-api:live"}]}`, true},
		{`{"routes": [{"function": "my api"}]}`, false},
		{`{"routes": [{"function": "../admin"}]}`, false},
		{`{"routes": [{"function": "` + strings.Repeat("f", 171) + `"}]}`, false},
	} {
		if _, err := ParseRoutesDocument([]byte(tc.doc)); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.doc, err, tc.ok)
		}
	}
}

// A minimum kept between UTC hours is 0 outside them, overnight spans
// included.
func TestMinimumAt(t *testing.T) {
	at := func(h int) time.Time { return time.Date(2026, 12, 7, h, 30, 0, 0, time.UTC) }
	for _, c := range []struct {
		hours string
		hour  int
		want  int
	}{
		{"", 3, 2}, {"8-20", 7, 0}, {"8-20", 8, 2}, {"8-20", 19, 2}, {"8-20", 20, 0},
		{"22-6", 23, 2}, {"22-6", 2, 2}, {"22-6", 6, 0}, {"22-6", 12, 0}, {"0-24", 0, 2}, {"0-24", 23, 2}, {"20-24", 23, 2}, {"20-24", 3, 0},
	} {
		if _, _, ok := parseHours(c.hours); c.hours != "" && !ok {
			t.Errorf("hours %q refused", c.hours)
		}
		if got := (Route{MinInstances: 2, MinInstancesHours: c.hours}).MinimumAt(at(c.hour)); got != c.want {
			t.Errorf("min_instances 2 at hours %q, %02d:30 UTC: %d, want %d", c.hours, c.hour, got, c.want)
		}
	}
}
