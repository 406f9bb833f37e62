// Package config loads ferry-router's configuration from the environment
// and an optional JSON routes file, validating everything at start.
package config

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrun/ferry/router/pool"
)

// Environment variables ferry-router reads. README's router table lists
// exactly these; a test keeps the two in step.
const (
	EnvListen          = "FERRY_ROUTER_LISTEN"
	EnvTunnelListen    = "FERRY_ROUTER_TUNNEL_LISTEN"
	EnvAdminListen     = "FERRY_ROUTER_ADMIN_LISTEN"
	EnvAdvertise       = "FERRY_ROUTER_ADVERTISE"
	EnvRoutes          = "FERRY_ROUTER_ROUTES"
	EnvConfigFile      = "FERRY_ROUTER_CONFIG"
	EnvMaxConcurrency  = "FERRY_ROUTER_MAX_CONCURRENCY"
	EnvIdleLinger      = "FERRY_ROUTER_IDLE_LINGER"
	EnvPolicy          = "FERRY_ROUTER_POLICY"
	EnvQueueLimit      = "FERRY_ROUTER_QUEUE_LIMIT"
	EnvQueueTimeout    = "FERRY_ROUTER_QUEUE_TIMEOUT"
	EnvLaunchTimeout   = "FERRY_ROUTER_LAUNCH_TIMEOUT"
	EnvMaxInstances    = "FERRY_ROUTER_MAX_INSTANCES"
	EnvMaxHeaderBytes  = "FERRY_ROUTER_MAX_HEADER_BYTES"
	EnvMaxBodyBytes    = "FERRY_ROUTER_MAX_BODY_BYTES"
	EnvTLSCert         = "FERRY_ROUTER_TLS_CERT"
	EnvTLSKey          = "FERRY_ROUTER_TLS_KEY"
	EnvTokenSecret     = "FERRY_ROUTER_TOKEN_SECRET"
	EnvMetricsInterval = "FERRY_ROUTER_METRICS_INTERVAL"
	EnvMetrics         = "FERRY_ROUTER_METRICS"
	EnvPprof           = "FERRY_ROUTER_PPROF"
	EnvShutdownTimeout = "FERRY_ROUTER_SHUTDOWN_TIMEOUT"
	EnvLogLevel        = "FERRY_ROUTER_LOG_LEVEL"
	EnvTrustedProxies  = "FERRY_ROUTER_TRUSTED_PROXIES"
	EnvBodyTimeout     = "FERRY_ROUTER_BODY_TIMEOUT"
	EnvWebSocketIdle   = "FERRY_ROUTER_WEBSOCKET_IDLE_TIMEOUT"
	EnvPlain           = "FERRY_ROUTER_PLAIN"
	EnvCarry           = "FERRY_ROUTER_CARRY"
	EnvRoutesParameter = "FERRY_ROUTER_ROUTES_PARAMETER"
	EnvRoutesPoll      = "FERRY_ROUTER_ROUTES_POLL"
	EnvPeers           = "FERRY_ROUTER_PEERS"
	EnvPeerListen      = "FERRY_ROUTER_PEER_LISTEN"
	EnvPeerAdvertise   = "FERRY_ROUTER_PEER_ADVERTISE"
	EnvOwnerConc       = "FERRY_ROUTER_OWNER_CONCURRENCY"
	EnvUnreadyAfter    = "FERRY_ROUTER_UNREADY_AFTER"
)

// Names lists every variable above.
var Names = []string{EnvListen, EnvTunnelListen, EnvAdminListen, EnvAdvertise, EnvRoutes, EnvConfigFile,
	EnvMaxConcurrency, EnvIdleLinger, EnvPolicy, EnvQueueLimit, EnvQueueTimeout, EnvLaunchTimeout, EnvMaxInstances,
	EnvMaxHeaderBytes, EnvMaxBodyBytes, EnvTLSCert, EnvTLSKey, EnvTokenSecret, EnvMetricsInterval,
	EnvMetrics, EnvPprof, EnvShutdownTimeout, EnvLogLevel, EnvTrustedProxies, EnvBodyTimeout, EnvWebSocketIdle, EnvPlain, EnvCarry,
	EnvRoutesParameter, EnvRoutesPoll, EnvPeers, EnvPeerListen, EnvPeerAdvertise, EnvOwnerConc, EnvUnreadyAfter}

// Route maps requests to a function, with that function's pool options.
type Route struct {
	Function       string      `json:"function"`
	Host           string      `json:"host,omitempty"`
	PathPrefix     string      `json:"path_prefix,omitempty"`
	MaxConcurrency int         `json:"max_concurrency,omitempty"` // 0: the router default
	Policy         pool.Policy `json:"policy,omitempty"`          // "": the router default
	Plain          string      `json:"plain,omitempty"`           // auto or off; "": the router default
	// MinInstances is how many live instances the router keeps for the
	// function, traffic or not (0, the default: none). Each is billed
	// for all of its time.
	MinInstances int `json:"min_instances,omitempty"`
	// MinInstancesHours, if set, keeps that minimum only between two UTC
	// hours, "8-20" (from 08:00 to 20:00) or "22-6" (overnight); outside
	// them the minimum is 0. Empty: at all hours.
	MinInstancesHours string `json:"min_instances_hours,omitempty"`
}

// MinimumAt is the minimum of live instances r asks for at t.
func (r Route) MinimumAt(t time.Time) int {
	from, to, ok := parseHours(r.MinInstancesHours)
	if !ok {
		return r.MinInstances
	}
	h := t.UTC().Hour()
	in := (from < to && h >= from && h < to) || (from > to && (h >= from || h < to))
	if !in {
		return 0
	}
	return r.MinInstances
}

// parseHours reads "from-to": from an hour 0..23 to a different one 0..24
// (0-24 is all day; 22-6 wraps past midnight); ok is false for "" and for
// anything else.
func parseHours(s string) (from, to int, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	from, err1 := strconv.Atoi(strings.TrimSpace(a))
	to, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || from < 0 || from > 23 || to < 0 || to > 24 || from == to || (from == 0 && to == 0) {
		return 0, 0, false
	}
	return from, to, true
}

// MaxMinInstances bounds a route's min_instances: a typo must not keep a
// fleet billed around the clock.
const MaxMinInstances = 100

// Config is ferry-router's configuration.
type Config struct {
	Listen, TunnelListen, AdminListen string
	Advertise                         string // host:port bootstraps dial; in every invoke payload
	Routes                            []Route
	// RoutesParameter names an SSM parameter holding more routes (a routes
	// document, as the routes file), read every RoutesPoll: routes added
	// there serve without a restart and outlive a redeploy.
	RoutesParameter string
	RoutesPoll      time.Duration
	MaxConcurrency  int
	// IdleLinger is the longest an instance is asked, in its dial-back
	// payload, to stay with no request in flight before it ends; each pool
	// asks for less when the gaps between its requests say lingering costs
	// more than a new invocation (a function's own FERRY_IDLE_LINGER wins).
	IdleLinger time.Duration
	// Plain lets a request that no live instance can take go as one plain
	// invocation (an HTTP event in the payload, as a Function URL sends)
	// while a function's tunnel invocations are not being shared: CPU-bound
	// work, traffic too sparse to overlap. Then ferry costs what plain
	// Lambda costs there. FERRY_ROUTER_PLAIN=off keeps every request on
	// tunnels.
	Plain bool
	// Carry puts the request an invocation is launched for in its event,
	// bound to that invocation, which runs it when the router claims it
	// (pool.Launch.First). FERRY_ROUTER_CARRY=off leaves it free to take
	// any instance's slot, as a stream.
	Carry bool
	// TrustedProxies are the load balancers in front of the router: a
	// request from one keeps its X-Forwarded-For (the router appends the
	// balancer) and its X-Forwarded-Proto and -Host. Anyone else's are
	// replaced: a client cannot claim another address.
	TrustedProxies []netip.Prefix
	// BodyTimeout: a request body must arrive within it, then at 16 KiB a
	// second at least, or the request ends 408 (see proxy.Config).
	BodyTimeout time.Duration
	// WebSocketIdle closes a WebSocket with no byte either way this long.
	WebSocketIdle   time.Duration
	Policy          pool.Policy
	QueueLimit      int
	QueueTimeout    time.Duration
	LaunchTimeout   time.Duration
	MaxInstances    int
	MaxHeaderBytes  int
	MaxBodyBytes    int64
	TLSCert, TLSKey string // files; both or neither (then a key is generated)
	TokenSecret     []byte // nil: generated at start; a token is redeemed only by the router that minted it either way
	MetricsInterval time.Duration
	// Where metrics go: EMF lines on stdout, PutMetricData, both, or
	// neither (all false).
	MetricsEMF, MetricsCloudWatch bool
	Pprof                         bool // /debug/pprof/ on the admin listener
	ShutdownTimeout               time.Duration
	LogLevel                      slog.Level

	// Peers are the router replicas that share functions (a ring): a
	// static list of their peer addresses, or none. CloudMap, if set,
	// finds them in AWS Cloud Map instead. Neither: this replica serves
	// every request it takes itself.
	Peers    []string
	CloudMap *CloudMapService
	// PeerListen is where this replica takes requests its peers forward
	// (HTTP/2 without TLS, authenticated by a key derived from
	// TokenSecret): reachable from the other replicas only.
	PeerListen string
	// PeerAdvertise is this replica's peer address as the others reach it;
	// "ecs" for the task's private address.
	PeerAdvertise string
	// OwnerConcurrency is how many of one function's requests at once an
	// owner takes before the function gets one more (see ring.Config).
	OwnerConcurrency int
	// UnreadyAfter: once every call to the Lambda API has failed this long
	// (account throttles, Lambda's own errors, no connection), here or at
	// a peer, and no instance is live here, /readyz says not ready, so
	// health checks move traffic to another region; 0 (the default):
	// never. ECS replaces tasks whose load balancer health check fails:
	// set it where another region can take the traffic.
	UnreadyAfter time.Duration
}

// CloudMapService names an AWS Cloud Map service.
type CloudMapService struct{ Namespace, Service string }

// Ring reports whether the replicas share functions.
func (c Config) Ring() bool { return len(c.Peers) > 0 || c.CloudMap != nil }

// Load reads the configuration through getenv (os.Getenv in production).
// An error names the variable and the value it could not use.
func Load(getenv func(string) string) (Config, error) {
	c := Config{
		Listen: fmt.Sprintf(":%d", IngressPort), TunnelListen: fmt.Sprintf(":%d", TunnelPort), AdminListen: fmt.Sprintf("127.0.0.1:%d", AdminPort),
		MaxConcurrency: 64, IdleLinger: 2 * time.Millisecond, Plain: true, Carry: true, Policy: pool.Pack, QueueLimit: 1000, QueueTimeout: 10 * time.Second,
		LaunchTimeout: 30 * time.Second, MaxInstances: 1000, MaxHeaderBytes: 64 << 10, MaxBodyBytes: 32 << 20,
		MetricsInterval: time.Minute, MetricsEMF: true, ShutdownTimeout: 25 * time.Second, RoutesPoll: 2 * time.Second,
		WebSocketIdle: 5 * time.Minute, PeerListen: fmt.Sprintf(":%d", PeerPort), OwnerConcurrency: 256,
	}
	var err error
	fail := func(name, value, why string) {
		if err == nil {
			err = fmt.Errorf("%s=%q: %s", name, value, why)
		}
	}
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	num := func(name string, dst *int, lo, hi int) {
		if v := getenv(name); v != "" {
			n, e := strconv.Atoi(v)
			if e != nil || n < lo || n > hi {
				fail(name, v, fmt.Sprintf("want an integer in %d..%d", lo, hi))
				return
			}
			*dst = n
		}
	}
	dur := func(name string, dst *time.Duration, lo, hi time.Duration) {
		if v := getenv(name); v != "" {
			d, e := time.ParseDuration(v)
			if e != nil || d < lo || d > hi {
				fail(name, v, fmt.Sprintf("want a duration in %v..%v", lo, hi))
				return
			}
			*dst = d
		}
	}
	str(EnvListen, &c.Listen)
	str(EnvTunnelListen, &c.TunnelListen)
	str(EnvAdminListen, &c.AdminListen)
	str(EnvAdvertise, &c.Advertise)
	str(EnvTLSCert, &c.TLSCert)
	str(EnvTLSKey, &c.TLSKey)
	num(EnvMaxConcurrency, &c.MaxConcurrency, 1, 1600)
	dur(EnvIdleLinger, &c.IdleLinger, time.Millisecond, time.Hour)
	switch v := getenv(EnvPlain); v {
	case "", "auto":
	case "off":
		c.Plain = false
	default:
		fail(EnvPlain, v, "want auto or off")
	}
	switch v := getenv(EnvCarry); v {
	case "", "on":
	case "off":
		c.Carry = false
	default:
		fail(EnvCarry, v, "want on or off")
	}
	if v := getenv(EnvPolicy); v != "" {
		c.Policy = pool.Policy(v)
		if c.Policy != pool.Pack && c.Policy != pool.Spread {
			fail(EnvPolicy, v, "want pack or spread")
		}
	}
	num(EnvQueueLimit, &c.QueueLimit, 1, 1_000_000)
	dur(EnvQueueTimeout, &c.QueueTimeout, 10*time.Millisecond, 15*time.Minute)
	dur(EnvLaunchTimeout, &c.LaunchTimeout, time.Second, 15*time.Minute)
	num(EnvMaxInstances, &c.MaxInstances, 1, 100_000)
	num(EnvMaxHeaderBytes, &c.MaxHeaderBytes, 1024, 1<<20)
	maxBody := int(c.MaxBodyBytes)
	num(EnvMaxBodyBytes, &maxBody, 1, 1<<30)
	c.MaxBodyBytes = int64(maxBody)
	dur(EnvMetricsInterval, &c.MetricsInterval, time.Second, time.Hour)
	dur(EnvBodyTimeout, &c.BodyTimeout, 100*time.Millisecond, time.Hour)
	dur(EnvWebSocketIdle, &c.WebSocketIdle, time.Second, time.Hour)
	if v := getenv(EnvTrustedProxies); v != "" {
		for _, f := range strings.Split(v, ",") {
			pfx, e := netip.ParsePrefix(strings.TrimSpace(f))
			if e != nil {
				fail(EnvTrustedProxies, v, "want comma-separated CIDR ranges, such as 10.0.0.0/16")
				break
			}
			c.TrustedProxies = append(c.TrustedProxies, pfx.Masked())
		}
	}
	if v := getenv(EnvMetrics); v != "" {
		c.MetricsEMF = false
		for _, sink := range strings.Split(v, ",") {
			switch strings.TrimSpace(sink) {
			case "emf":
				c.MetricsEMF = true
			case "cloudwatch":
				c.MetricsCloudWatch = true
			case "off":
			default:
				fail(EnvMetrics, v, "want emf, cloudwatch, emf,cloudwatch or off")
			}
		}
	}
	if v := getenv(EnvPprof); v != "" {
		b, e := strconv.ParseBool(v)
		if e != nil {
			fail(EnvPprof, v, "want true or false")
		}
		c.Pprof = b
		if b && !loopbackOnly(c.AdminListen) {
			fail(EnvPprof, v, fmt.Sprintf("profiles would be served to anyone who reaches %s=%s: listen on loopback (127.0.0.1:PORT) to use them",
				EnvAdminListen, c.AdminListen))
		}
	}
	dur(EnvShutdownTimeout, &c.ShutdownTimeout, 0, 15*time.Minute)
	if v := getenv(EnvLogLevel); v != "" && c.LogLevel.UnmarshalText([]byte(v)) != nil {
		fail(EnvLogLevel, v, "want debug, info, warn or error")
	}
	if v := getenv(EnvTokenSecret); v != "" {
		// Hex if it decodes to 32 bytes or more; otherwise the string's own
		// bytes (Secrets Manager's generator cannot be limited to hex).
		if b, e := hex.DecodeString(v); e == nil && len(b) >= 32 {
			c.TokenSecret = b
		} else if len(v) >= 32 {
			c.TokenSecret = []byte(v)
		} else {
			fail(EnvTokenSecret, "(redacted)", "want at least 32 characters, or 32 bytes hex-encoded")
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		fail(EnvTLSCert, c.TLSCert, EnvTLSCert+" and "+EnvTLSKey+" go together")
	}
	if v := getenv(EnvRoutes); v != "" {
		rs, e := ParseRoutes(v)
		if e != nil {
			fail(EnvRoutes, v, e.Error())
		}
		c.Routes = append(c.Routes, rs...)
	}
	if path := getenv(EnvConfigFile); path != "" {
		rs, e := readRoutesFile(path)
		if e != nil {
			fail(EnvConfigFile, path, e.Error())
		}
		c.Routes = append(c.Routes, rs...)
	}
	str(EnvPeerListen, &c.PeerListen)
	str(EnvPeerAdvertise, &c.PeerAdvertise)
	num(EnvOwnerConc, &c.OwnerConcurrency, 1, 1_000_000)
	dur(EnvUnreadyAfter, &c.UnreadyAfter, 0, 10*time.Minute)
	if v := getenv(EnvPeers); v != "" {
		if rest, ok := strings.CutPrefix(v, "cloudmap:"); ok {
			ns, svc, found := strings.Cut(rest, "/")
			if !found || ns == "" || svc == "" || strings.Contains(svc, "/") {
				fail(EnvPeers, v, "want cloudmap:NAMESPACE/SERVICE")
			}
			c.CloudMap = &CloudMapService{Namespace: ns, Service: svc}
		} else {
			for _, a := range strings.Split(v, ",") {
				a = strings.TrimSpace(a)
				if host, port, e := net.SplitHostPort(a); e != nil || host == "" || port == "" || port == "0" {
					fail(EnvPeers, v, "want host:port addresses separated by commas, or cloudmap:NAMESPACE/SERVICE")
					break
				}
				c.Peers = append(c.Peers, a)
			}
		}
	}
	if c.PeerAdvertise != "" && c.PeerAdvertise != AdvertiseECS {
		if host, port, e := net.SplitHostPort(c.PeerAdvertise); e != nil || host == "" || port == "" || port == "0" {
			fail(EnvPeerAdvertise, c.PeerAdvertise, "want host:port (this replica's peer address as the others reach it), or ecs")
		}
	}
	if c.Ring() && c.TokenSecret == nil {
		fail(EnvPeers, getenv(EnvPeers), "replicas that share functions authenticate each other with a key derived from "+EnvTokenSecret+": set the same secret on every replica")
	}
	str(EnvRoutesParameter, &c.RoutesParameter)
	dur(EnvRoutesPoll, &c.RoutesPoll, time.Second, 10*time.Minute)
	if err != nil {
		return Config{}, err
	}
	if len(c.Routes) == 0 && c.RoutesParameter == "" {
		return Config{}, fmt.Errorf("no routes: set %s (e.g. \"app=/\"), %s or %s", EnvRoutes, EnvConfigFile, EnvRoutesParameter)
	}
	if e := mergeFunctionOptions(c.Routes); e != nil {
		return Config{}, fmt.Errorf("routes (%s, %s): %w", EnvRoutes, EnvConfigFile, e)
	}
	if c.Advertise == AdvertiseECS || c.Advertise == AdvertiseECSPublic {
		return c, nil // resolved at start, from the task metadata
	}
	if c.Advertise == "" {
		host, _, e := net.SplitHostPort(c.TunnelListen)
		if e != nil || host == "" || host == "0.0.0.0" || host == "::" {
			return Config{}, fmt.Errorf("%s is required when %s=%q listens on every address: bootstraps need an address they can reach", EnvAdvertise, EnvTunnelListen, c.TunnelListen)
		}
		c.Advertise = c.TunnelListen // refined to the bound port at start if it is :0
	}
	return c, nil
}

// ParseRoutes parses "function=[host]/prefix" entries separated by commas:
// "app=/", "api=api.example.com/v1", "web=example.com".
func ParseRoutes(s string) ([]Route, error) {
	var out []Route
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		fn, spec, ok := strings.Cut(entry, "=")
		if !ok || fn == "" || spec == "" {
			return nil, fmt.Errorf("route %q: want function=[host]/prefix", entry)
		}
		r := Route{Function: fn}
		if i := strings.IndexByte(spec, '/'); i >= 0 {
			r.Host, r.PathPrefix = spec[:i], spec[i:]
		} else {
			r.Host = spec
		}
		out = append(out, r)
	}
	return out, validateRoutes(out)
}

func readRoutesFile(path string) ([]Route, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseRoutesDocument(b)
}

// The ports the router listens on by default, and the stack's tasks on.
const (
	IngressPort = 8080
	TunnelPort  = 8443
	AdminPort   = 9090
	PeerPort    = 8444
)

// LayerParameterName is the SSM parameter in which ferry's stack named
// stackName keeps the ARN of its layer's current version for arch (arm64
// or x86_64), for functions deployed apart from the stack.
func LayerParameterName(stackName, arch string) string {
	return "/ferry/" + stackName + "/layer-arn/" + arch
}

// RoutesParameterName is the routes parameter ferry's stack named
// stackName creates (ferry routes finds it by the stack's name).
func RoutesParameterName(stackName string) string { return "/ferry/" + stackName + "/routes" }

// MaxRoutesDocument bounds a routes document (SSM's advanced tier holds
// 8 KB; a file may be larger, but no router needs thousands of routes).
const MaxRoutesDocument = 1 << 20

// RoutesDocument is the routes file's, and the routes parameter's, JSON.
type RoutesDocument struct {
	Routes []Route `json:"routes"`
}

// ParseRoutesDocument parses and validates a routes document.
func ParseRoutesDocument(b []byte) ([]Route, error) {
	if len(b) > MaxRoutesDocument {
		return nil, fmt.Errorf("routes document of %d bytes: the limit is %d", len(b), MaxRoutesDocument)
	}
	var f RoutesDocument
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	return f.Routes, validateRoutes(f.Routes)
}

// Combine is the routes of every list together, each function's options
// shared by all its routes; routes that set one function's options
// differently are refused.
func Combine(lists ...[]Route) ([]Route, error) {
	var out []Route
	for _, l := range lists {
		out = append(out, l...)
	}
	return out, mergeFunctionOptions(out)
}

// functionName is what Lambda takes as a function: a name, a partial or
// whole ARN, a qualifier. (A name is also a metrics dimension.)
var functionName = regexp.MustCompile(`^[A-Za-z0-9_.:$-]{1,170}$`)

func validateRoutes(rs []Route) error {
	for _, r := range rs {
		switch {
		case r.Function == "":
			return fmt.Errorf("route %+v: missing function", r)
		case !functionName.MatchString(r.Function):
			return fmt.Errorf("route to %q: not a Lambda function name or ARN", r.Function)
		case r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/"):
			return fmt.Errorf("route to %s: path prefix %q must start with /", r.Function, r.PathPrefix)
		case r.MaxConcurrency < 0 || r.MaxConcurrency > 1600:
			return fmt.Errorf("route to %s: max_concurrency %d outside 1..1600", r.Function, r.MaxConcurrency)
		case r.Policy != "" && r.Policy != pool.Pack && r.Policy != pool.Spread:
			return fmt.Errorf("route to %s: policy %q: want pack or spread", r.Function, r.Policy)
		case r.Plain != "" && r.Plain != "auto" && r.Plain != "off":
			return fmt.Errorf("route to %s: plain %q: want auto or off", r.Function, r.Plain)
		case r.MinInstances < 0 || r.MinInstances > MaxMinInstances:
			return fmt.Errorf("route to %s: min_instances %d outside 0..%d", r.Function, r.MinInstances, MaxMinInstances)
		case r.MinInstancesHours != "":
			if _, _, ok := parseHours(r.MinInstancesHours); !ok {
				return fmt.Errorf("route to %s: min_instances_hours %q: want two different UTC hours, from-to, as 8-20 or 22-6", r.Function, r.MinInstancesHours)
			}
		}
	}
	return nil
}

// mergeFunctionOptions gives every route of a function the options any of
// them sets (one pool serves them all), and refuses routes that set them
// differently: a second route's options were once dropped without a word.
func mergeFunctionOptions(rs []Route) error {
	merged := map[string]Route{} // each function's options
	for _, r := range rs {
		o := merged[r.Function]
		if err := cmp.Or(
			mergeOption(r.Function, "max_concurrency", &o.MaxConcurrency, r.MaxConcurrency),
			mergeOption(r.Function, "policy", &o.Policy, r.Policy),
			mergeOption(r.Function, "plain", &o.Plain, r.Plain),
			mergeOption(r.Function, "min_instances", &o.MinInstances, r.MinInstances),
			mergeOption(r.Function, "min_instances_hours", &o.MinInstancesHours, r.MinInstancesHours),
		); err != nil {
			return err
		}
		merged[r.Function] = o
	}
	for i := range rs {
		o := merged[rs[i].Function]
		rs[i].MaxConcurrency, rs[i].Policy, rs[i].Plain = o.MaxConcurrency, o.Policy, o.Plain
		rs[i].MinInstances, rs[i].MinInstancesHours = o.MinInstances, o.MinInstancesHours
	}
	return nil
}

// mergeOption keeps v, one route's value of function fn's option name, in
// *kept: an unset (zero) v changes nothing, and a v other than one already
// kept is refused.
func mergeOption[T comparable](fn, name string, kept *T, v T) error {
	var unset T
	switch {
	case v == unset:
	case *kept != unset && *kept != v:
		return fmt.Errorf("function %s: %s %v on one route, %v on another", fn, name, *kept, v)
	default:
		*kept = v
	}
	return nil
}

// loopbackOnly reports whether a listen address takes connections from
// this host only.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
