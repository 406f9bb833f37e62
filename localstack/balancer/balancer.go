// Package balancer runs nginx on loopback as the L7 load balancer in
// front of several router replicas, spreading requests round-robin as an
// ALB spreads them over router tasks. It is for local runs, the demo, the
// bench and tests: nginx from the distribution (Debian's nginx-light).
package balancer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Balancer is a running nginx.
type Balancer struct {
	// URL is where clients send requests: http://127.0.0.1:port.
	URL    string
	cmd    *exec.Cmd
	dir    string
	exited chan error // receives nginx's exit
}

// Start runs nginx on listen (127.0.0.1:port) in front of upstreams
// (host:port each), with its files under dir. A replica that refuses a
// connection is passed over for the next, and rested for a few seconds,
// as a balancer's health check would. nginx sends a request again to the
// next replica only where the first cannot have answered it: after a
// refused connection, and for an idempotent request (GET), also when the
// connection broke before the response began; a POST it has sent is never
// sent again.
func Start(ctx context.Context, dir, listen string, upstreams []string) (*Balancer, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, errors.New("balancer: nginx is not installed (Debian: apt-get install nginx-light)")
	}
	if host, _, err := net.SplitHostPort(listen); err != nil || !net.ParseIP(host).IsLoopback() {
		return nil, fmt.Errorf("balancer: listen on loopback (127.0.0.1:PORT), not %q", listen)
	}
	if len(upstreams) == 0 {
		return nil, errors.New("balancer: no upstreams")
	}
	var servers strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&servers, "    server %s max_fails=1 fail_timeout=3s;\n", u)
	}
	for _, d := range []string{"tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
		// Run as root, nginx's workers run as nobody and buffer there.
		os.Chmod(filepath.Join(dir, d), 0o777)
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  upstream routers {
%[2]s    keepalive 64;
  }
  server {
    listen %[3]s;
    client_max_body_size 0;
    location / {
      proxy_pass http://routers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
      proxy_connect_timeout 2s;
      proxy_next_upstream error timeout;
    }
  }
}
`, dir, servers.String(), listen)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "logs", "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its workers stop with it
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("balancer: starting nginx: %w", err)
	}
	b := &Balancer{URL: "http://" + listen, cmd: cmd, dir: dir, exited: make(chan error, 1)}
	go func() { b.exited <- cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-b.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
			return nil, fmt.Errorf("balancer: nginx exited (%v): %s", err, log)
		default:
		}
		if c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond); err == nil {
			c.Close()
			return b, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.Stop()
			return nil, errors.New("balancer: nginx never listened on " + listen)
		}
	}
}

// Stop ends nginx and its workers, and waits for nginx to exit.
func (b *Balancer) Stop() {
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
	}
}

// ErrorLog is what nginx logged.
func (b *Balancer) ErrorLog() string {
	log, _ := os.ReadFile(filepath.Join(b.dir, "logs", "error.log"))
	return string(log)
}
