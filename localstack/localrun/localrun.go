// Package localrun starts ferry on this machine: Plane, the Lambda
// emulator and ferry-router as real processes on loopback, which the local
// data plane of a deployed stack (localstack/dataplane) and Start use; and
// Start, for the demo and the benchmarks, the real bootstrap and the Go
// sample app as one or more functions, routed to by host.
package localrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrun/ferry/localstack/balancer"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
	"github.com/ferryrun/ferry/router/config"
)

// Function is one function of a Stack, reached through the router with
// Host: <Name>.localhost.
type Function struct {
	Name string
	// Limit is the router's streams per instance, also set as the
	// bootstrap's FERRY_MAX_CONCURRENCY; if zero, both keep their defaults.
	// A function with a limit is a baseline: its requests all go through
	// tunnels (no plain invocations).
	Limit int
	// MemoryMB is the function's memory, which buys memory/1769 vCPU; if
	// zero, 1769 (one vCPU).
	MemoryMB int
	// Concurrency is the emulator's limit on concurrent invocations; if
	// zero, 200.
	Concurrency int
	Timeout     time.Duration     // if zero, 60s
	Env         map[string]string // added to the bootstrap's environment
	// InProcess runs the sample app as the function's own bootstrap
	// (ferry's in-process mode, serve.Start) instead of behind the layer's.
	InProcess bool
	// MinInstances is the route's min_instances: live instances kept
	// whatever the traffic.
	MinInstances int
}

// Config configures Start.
type Config struct {
	Dist      string // holds bootstrap, goapp, lambda-emulator and ferry-router
	Functions []Function
	// LambdaEndpoint, if set, is a Lambda Invoke API the router calls
	// instead of the emulator, which is then not started (the benchmarks'
	// stand-in control plane for thousands of instances).
	LambdaEndpoint string
	RouterEnv      []string // added to the router's environment
	// Replicas is how many routers share the functions (a ring: see
	// router/ring), behind nginx as an ALB spreads requests over router
	// tasks (localstack/balancer). 0 or 1: one router, and no balancer
	// unless Balancer.
	Replicas  int
	Balancer  bool      // nginx in front of even one router
	RouterLog io.Writer // the router's stderr (JSON logs); if nil, discarded
	Log       io.Writer // the emulator's and the functions' output; if nil, discarded
}

// Stack is a running emulator and router, or routers.
type Stack struct {
	// Ingress is where clients send requests: the router, or the balancer
	// in front of the routers. Admin is the (first) router's admin.
	Ingress, Admin, Emulator string // http://host:port
	// Ingresses and Admins are each router's, in order; Peers their peer
	// addresses where there are several.
	Ingresses, Admins, Peers []string
	RouterPID                int // the last router's
	work                     string
	procs                    []*exec.Cmd
	lb                       *balancer.Balancer
}

// Start starts the stack and waits until both processes answer.
func Start(ctx context.Context, c Config) (*Stack, error) {
	dist, err := filepath.Abs(c.Dist)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "ferry-local-")
	if err != nil {
		return nil, err
	}
	s := &Stack{work: work}
	layer, code := filepath.Join(work, "layer"), filepath.Join(work, "code")
	for _, l := range [][2]string{{"bootstrap", layer}, {"goapp", code}} {
		if err := os.MkdirAll(l[1], 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink(filepath.Join(dist, l[0]), filepath.Join(l[1], l[0])); err != nil {
			return nil, err
		}
	}
	inproc := filepath.Join(work, "code-inprocess")
	if err := os.MkdirAll(inproc, 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(filepath.Join(dist, "goapp"), filepath.Join(inproc, "bootstrap")); err != nil {
		return nil, err
	}
	var fns []lambdaemu.Function
	var routes []config.Route
	for _, f := range c.Functions {
		// The emulator holds each sandbox to the vCPU its memory buys.
		env := map[string]string{"FERRY_APP_CMD": filepath.Join(code, "goapp"), "FERRY_READINESS_PATH": "/healthz"}
		if f.Limit > 0 {
			env["FERRY_MAX_CONCURRENCY"] = strconv.Itoa(f.Limit)
		}
		for k, v := range f.Env {
			env[k] = v
		}
		conc, timeout, mem := f.Concurrency, f.Timeout, f.MemoryMB
		if mem == 0 {
			mem = 1769
		}
		if conc == 0 {
			conc = 200
		}
		if timeout == 0 {
			timeout = time.Minute
		}
		codeDir := code
		if f.InProcess {
			codeDir, env["GOAPP_IN_PROCESS"] = inproc, "1"
		}
		fns = append(fns, lambdaemu.Function{Name: f.Name, CodeDir: codeDir, Layers: []string{layer},
			Runtime: "provided.al2023", Timeout: lambdaemu.Duration{Duration: timeout}, MemoryMB: mem, Concurrency: conc, Env: env})
		rt := config.Route{Function: f.Name, Host: f.Name + ".localhost", MaxConcurrency: f.Limit, MinInstances: f.MinInstances}
		if f.Limit > 0 {
			rt.Plain = "off"
		}
		routes = append(routes, rt)
	}
	routesFile := filepath.Join(work, "routes.json")
	if err := writeJSON(routesFile, struct {
		Routes []config.Route `json:"routes"`
	}{routes}); err != nil {
		return nil, err
	}
	n := max(c.Replicas, 1)
	replicas, ingresses, peers := make([]Replica, n), make([]string, n), make([]string, n)
	for i := range n {
		var admin string
		for _, a := range []*string{&ingresses[i], &admin, &peers[i]} {
			if *a, err = FreeAddr(); err != nil {
				return nil, err
			}
		}
		replicas[i] = Replica{AdminURL: "http://" + admin,
			Env: []string{"FERRY_ROUTER_LISTEN=" + ingresses[i], "FERRY_ROUTER_ADMIN_LISTEN=" + admin}}
		s.Ingresses, s.Admins = append(s.Ingresses, "http://"+ingresses[i]), append(s.Admins, replicas[i].AdminURL)
	}
	common := []string{"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
		"FERRY_ROUTER_CONFIG=" + routesFile, "FERRY_ROUTER_TUNNEL_LISTEN=127.0.0.1:0", "FERRY_ROUTER_METRICS=off",
		"GODEBUG=http2xconnect=1"} // WebSockets over HTTP/2, as the image sets
	if n > 1 {
		s.Peers = peers
		secret := make([]byte, 32)
		rand.Read(secret)
		common = append(common, "FERRY_ROUTER_PEERS="+strings.Join(peers, ","), "FERRY_ROUTER_TOKEN_SECRET="+hex.EncodeToString(secret))
		for i := range replicas {
			replicas[i].Env = append(replicas[i].Env, "FERRY_ROUTER_PEER_LISTEN="+peers[i], "FERRY_ROUTER_PEER_ADVERTISE="+peers[i])
		}
	}
	s.Ingress, s.Admin = s.Ingresses[0], s.Admins[0]
	plane := Plane{Bin: dist, Functions: lambdaemu.Config{Functions: fns}, LambdaURL: c.LambdaEndpoint, AdminURL: s.Admin, Dir: work,
		Log: c.Log, RouterLog: c.RouterLog, RouterEnv: append(common, c.RouterEnv...)}
	if n > 1 {
		plane.Replicas = replicas
	} else {
		plane.RouterEnv = append(plane.RouterEnv, replicas[0].Env...)
	}
	if s.Emulator, s.procs, err = plane.Run(ctx); err != nil {
		os.RemoveAll(work)
		return nil, err
	}
	s.RouterPID = s.procs[len(s.procs)-1].Process.Pid
	if n > 1 || c.Balancer {
		lbAddr, err := FreeAddr()
		if err == nil {
			s.lb, err = balancer.Start(ctx, filepath.Join(work, "balancer"), lbAddr, ingresses)
		}
		if err != nil {
			s.Stop()
			return nil, err
		}
		s.Ingress = s.lb.URL
	}
	return s, nil
}

// Stop ends the router, then the emulator (which ends its sandboxes).
func (s *Stack) Stop() {
	if s.lb != nil {
		s.lb.Stop()
	}
	Kill(s.procs, true)
	s.procs = nil
	os.RemoveAll(s.work)
}

// Stats returns fn's totals in the emulator.
func (s *Stack) Stats(ctx context.Context, fn string) (lambdaemu.Stats, error) {
	var all map[string]lambdaemu.Stats
	if err := GetJSON(ctx, s.Emulator+"/_emulator/stats", &all); err != nil {
		return lambdaemu.Stats{}, err
	}
	return all[fn], nil
}

// Quiesce waits until fn has no live or starting instance in the router
// at admin and no invocation running in the emulator at emulator, so that
// every invocation is in the emulator's totals.
func Quiesce(ctx context.Context, admin, emulator, fn string) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		var pools []struct {
			Function  string `json:"function"`
			Instances []any  `json:"instances"`
			Pending   int    `json:"pending_invocations"`
		}
		if err := GetJSON(ctx, admin+"/pool", &pools); err != nil {
			return err
		}
		idle := true
		for _, p := range pools {
			if p.Function == fn && (len(p.Instances) > 0 || p.Pending > 0) {
				idle = false
			}
		}
		if idle {
			// The tunnel closes before the invocation ends: wait for the
			// emulator to have counted it.
			var all map[string]lambdaemu.Stats
			if err := GetJSON(ctx, emulator+"/_emulator/stats", &all); err != nil {
				return err
			}
			if all[fn].Running == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s's invocations did not end", fn)
}

// Quiesce is Quiesce for this stack: for every router of it.
func (s *Stack) Quiesce(ctx context.Context, fn string) error {
	for _, admin := range s.Admins {
		if err := Quiesce(ctx, admin, s.Emulator, fn); err != nil {
			return err
		}
	}
	return nil
}

// RSS is the router process's resident memory in bytes.
func (s *Stack) RSS() (int64, error) { return RSS(s.RouterPID) }

// RSS is a process's resident memory in bytes, from /proc.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0, err
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0, err
	}
	return resident * int64(os.Getpagesize()), nil
}

// GetJSON decodes url's JSON answer into v.
func GetJSON(ctx context.Context, url string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// WaitHTTP waits up to 15s for url to answer 200.
func WaitHTTP(ctx context.Context, url string) error {
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer", url)
}

// FreeAddr is a loopback address with a port free at the time of asking.
//
// The port is chosen below the kernel's ephemeral range: a port from
// that range, free when chosen, may be taken as the source port of any
// outgoing connection before the server that is to listen on it starts
// (a restarted router once failed with "address already in use"). It is
// also claimed for a while against every other FreeAddr on the machine
// (see claimPort): processes that each choose at random, and listen later,
// once chose the same one (a router replica found its peer port taken).
func FreeAddr() (string, error) {
	low := ephemeralLow()
	for range 100 {
		port := freePortsFrom + mrand.IntN(max(low-freePortsFrom, 1))
		if !claimPort(port) {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return ln.Addr().String(), nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// freePortsFrom is the lowest port FreeAddr chooses: above the ports
// services are usually given.
const freePortsFrom = 20000

// portClaim is how long a port FreeAddr chose stays claimed against other
// FreeAddr callers: longer than any test or run takes to start listening
// on the address it was given.
const portClaim = 10 * time.Minute

// claimPort claims port for portClaim against every FreeAddr on this
// machine, by creating a file named for it in a shared directory; false
// if another claimed it less than portClaim ago. Where the directory
// cannot be written, every port counts as unclaimed.
func claimPort(port int) bool {
	dir := filepath.Join(os.TempDir(), "ferry-ports")
	if os.MkdirAll(dir, 0o777) != nil {
		return true
	}
	path := filepath.Join(dir, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err == nil {
			f.Close()
			return true
		}
		if !errors.Is(err, os.ErrExist) {
			return true
		}
		fi, err := os.Stat(path)
		if err != nil || time.Since(fi.ModTime()) < portClaim {
			return false
		}
		os.Remove(path) // a stale claim: take it over
	}
	return false
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default where it cannot be read).
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > freePortsFrom {
				return n
			}
		}
	}
	return 32768
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
