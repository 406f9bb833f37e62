package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/localstack/localrun"
)

// warmPath is the request of the warm-path sections: no CPU, no wait, so
// what is measured is the path, not the app.
const warmPath = "/work?cpu_ms=0&wait_ms=0"

// overheadSection: the same app reached directly, through Go's
// ReverseProxy, through nginx, and through ferry-router + tunnel +
// bootstrap on a warm instance.
func overheadSection(ctx context.Context, o options) (*table, error) {
	trials, runFor, clients := 3, 5*time.Second, 8
	if o.short {
		trials, runFor = 1, 2*time.Second
	}
	work, err := os.MkdirTemp("", "ferry-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	// The app, on its own.
	appAddr, err := localrun.FreeAddr()
	if err != nil {
		return nil, err
	}
	app := exec.Command(filepath.Join(o.dist, "goapp"))
	app.Env = append(os.Environ(), "PORT="+strings.TrimPrefix(appAddr, "127.0.0.1:"))
	app.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := app.Start(); err != nil {
		return nil, err
	}
	defer func() { app.Process.Kill(); app.Wait() }()
	if err := localrun.WaitHTTP(ctx, "http://"+appAddr+"/healthz"); err != nil {
		return nil, err
	}

	// Go's ReverseProxy in front of it.
	target, _ := url.Parse("http://" + appAddr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	rpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rpSrv := &http.Server{Handler: rp}
	go rpSrv.Serve(rpLn)
	defer rpSrv.Close()

	// nginx in front of it, if it can be had.
	nginxURL, stopNginx, nginxErr := startNginx(ctx, work, appAddr)
	if stopNginx != nil {
		defer stopNginx()
	}

	// ferry: a warm instance that stays for the whole section.
	st, err := localrun.Start(ctx, localrun.Config{Dist: o.dist,
		Functions: []localrun.Function{
			{Name: "warm", Limit: 64, Timeout: 10 * time.Minute, Env: map[string]string{"FERRY_IDLE_LINGER": "5m", "FERRY_CPU_ADMISSION": "off"}},
			{Name: "inproc", Limit: 64, Timeout: 10 * time.Minute, InProcess: true,
				Env: map[string]string{"FERRY_IDLE_LINGER": "5m", "FERRY_CPU_ADMISSION": "off"}},
		}})
	if err != nil {
		return nil, err
	}
	defer st.Stop()

	type path struct{ name, url, host string }
	paths := []path{
		{"direct", "http://" + appAddr, ""},
		{"Go httputil.ReverseProxy", "http://" + rpLn.Addr().String(), ""},
		{"nginx", nginxURL, ""},
		{"ferry-router + tunnel + bootstrap", st.Ingress, "warm.localhost"},
		{"ferry, app in process (serve.Start)", st.Ingress, "inproc.localhost"},
	}
	type agg struct{ p50, p99, rps []float64 }
	results := make([]agg, len(paths))
	for range trials {
		for i, p := range paths {
			if p.url == "" {
				continue
			}
			attack(ctx, p.url+warmPath, p.host, clients, 300*time.Millisecond) // warm up
			r := attack(ctx, p.url+warmPath, p.host, clients, runFor)
			if r.errors > 0 {
				return nil, fmt.Errorf("%s: %d of %d requests failed: %s", p.name, r.errors, r.requests, r.firstErr)
			}
			results[i].p50 = append(results[i].p50, float64(quantile.Of(r.latencies, 0.5)))
			results[i].p99 = append(results[i].p99, float64(quantile.Of(r.latencies, 0.99)))
			results[i].rps = append(results[i].rps, r.rps())
		}
	}
	t := &table{
		title:   "2. Warm-path overhead: the same app, five ways",
		command: "go run ./bench -dist dist/bench -only overhead",
		header:  []string{"path", "p50", "p99", "added p50", "added p99", "requests/s", "vs direct"},
	}
	d50, d99, drps := median(results[0].p50), median(results[0].p99), median(results[0].rps)
	for i, p := range paths {
		if p.url == "" {
			t.add(p.name, "-", "-", "-", "-", "-", "-")
			continue
		}
		p50, p99, rps := median(results[i].p50), median(results[i].p99), median(results[i].rps)
		t.add(p.name, time.Duration(p50), time.Duration(p99), time.Duration(p50-d50), time.Duration(p99-d99),
			fmt.Sprintf("%.0f", rps), ratio(rps, drps))
	}
	t.notes = append(t.notes,
		fmt.Sprintf("GET %s, %d closed-loop clients (vegeta) for %v, median of %d trials; load generator, proxies and app share 2 cores.", warmPath, clients, runFor, trials),
		"ferry's app is the same goapp binary, started by the bootstrap inside an emulator sandbox; the path adds the router, the TLS tunnel's HTTP/2 stream and the bootstrap's proxy to the app.",
		"in process: the same goapp built as the function's own bootstrap (GOAPP_IN_PROCESS=1 calls serve.Start): no proxy hop to an app process.")
	if nginxErr != nil {
		t.notes = append(t.notes, "nginx not measured: "+nginxErr.Error())
	}
	return t, nil
}

// startNginx runs nginx as a keep-alive reverse proxy to app, installing
// the Debian package if nginx is missing and apt-get can.
func startNginx(ctx context.Context, dir, app string) (string, func(), error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, aptErr := exec.LookPath("apt-get"); aptErr != nil {
			return "", nil, errors.New("nginx is not installed and apt-get is not available")
		}
		install := exec.CommandContext(ctx, "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx")
		if out, err := install.CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("installing nginx: %v: %s", err, lastLine(out))
		}
		if bin, err = exec.LookPath("nginx"); err != nil {
			if _, statErr := os.Stat("/usr/sbin/nginx"); statErr != nil {
				return "", nil, err
			}
			bin = "/usr/sbin/nginx"
		}
	}
	addr, err := localrun.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	os.MkdirAll(filepath.Join(dir, "nginx-tmp"), 0o755)
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/nginx-tmp;
	proxy_temp_path %[1]s/nginx-tmp;
	fastcgi_temp_path %[1]s/nginx-tmp;
	uwsgi_temp_path %[1]s/nginx-tmp;
	scgi_temp_path %[1]s/nginx-tmp;
	upstream app { server %[2]s; keepalive 64; }
	server {
		listen %[3]s;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`, dir, app, addr)), 0o644)
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-c", conf, "-p", dir)
	var logs strings.Builder
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(b) })
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Signal(syscall.SIGQUIT); cmd.Wait() }
	if err := localrun.WaitHTTP(ctx, "http://"+addr+"/healthz"); err != nil {
		stop()
		mu.Lock()
		defer mu.Unlock()
		return "", nil, fmt.Errorf("nginx did not answer: %s", lastLine([]byte(logs.String())))
	}
	return "http://" + addr, stop, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

var _ io.Writer = writerFunc(nil)

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
