package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/ferryrun/ferry/internal/dialback"
	"github.com/ferryrun/ferry/internal/quantile"
	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/localstack/localrun"
)

// scaleSection: idle tunnels held by one router process, at 1k, 10k and as
// many as this machine's file descriptor limit allows; memory per tunnel
// and the time to pick an instance with that many live.
//
// Thousands of emulator sandboxes cannot run on one machine, so the
// instances here are a stand-in, named as such: invokeStandIn answers the
// router's Invoke calls by opening a tunnel with ferry's own tunnel code
// (tunnel.Dial, tunnel.NewSession, what the bootstrap runs) and serving a
// trivial handler. The router is the real binary, its invokes real AWS SDK
// calls.
func scaleSection(ctx context.Context, o options) (*table, error) {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	// Each tunnel costs one descriptor in the router and one here; invokes
	// share a few HTTP/2 connections. Keep 1,000 for everything else.
	most := int(min(lim.Max, 1<<20)) - 1000
	levels := []int{1000, 10000, most}
	if o.short {
		levels = []int{1000}
	}
	if most < levels[len(levels)-1] {
		levels = levels[:len(levels)-1]
	}
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)

	work, err := os.MkdirTemp("", "ferry-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	si, err := startInvokeStandIn(work)
	if err != nil {
		return nil, err
	}
	defer si.close()
	logs := &lockedBuffer{}
	st, err := localrun.Start(ctx, localrun.Config{Dist: o.dist, LambdaEndpoint: si.url, RouterLog: logs,
		Functions: []localrun.Function{{Name: "scale", Limit: 1}},
		RouterEnv: []string{"AWS_CA_BUNDLE=" + si.caFile, "FERRY_ROUTER_MAX_INSTANCES=100000",
			"FERRY_ROUTER_QUEUE_LIMIT=1000000", "FERRY_ROUTER_QUEUE_TIMEOUT=5m", "FERRY_ROUTER_LAUNCH_TIMEOUT=5m",
			"FERRY_ROUTER_PPROF=true"}})
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, lastLine(logs.Bytes()))
	}
	defer st.Stop()

	// Clients reach the router over h2c: thousands of held requests share a
	// few connections.
	h2c := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
	pickTime := func() (time.Duration, error) {
		var ds []time.Duration
		for range 200 {
			d, err := timeRequest(ctx, h2c, st.Ingress+"/ping")
			if err != nil {
				return 0, err
			}
			ds = append(ds, d)
		}
		return quantile.Of(ds, 0.5), nil
	}

	t := &table{
		title:   "5. Scale: idle tunnels held by one ferry-router process",
		command: "go run ./bench -dist dist/bench -only scale",
		header:  []string{"idle tunnels", "router RSS", "RSS per tunnel", "Go heap+stacks per tunnel", "request p50", "added vs 1 tunnel", "ramp"},
	}
	// Baseline: one instance.
	memBase, err := routerMemory(ctx, st)
	if err != nil {
		return nil, err
	}
	rssBase, _ := st.RSS()
	if err := si.ramp(ctx, h2c, st, 1); err != nil {
		return nil, err
	}
	base, err := pickTime()
	if err != nil {
		return nil, err
	}
	t.add(1, mb(rssBase), "-", "-", base, "-", "-")
	for _, n := range levels {
		start := time.Now()
		if err := si.ramp(ctx, h2c, st, n); err != nil {
			t.notes = append(t.notes, fmt.Sprintf("stopped before %d tunnels: %v", n, err))
			break
		}
		ramp := time.Since(start)
		mem, err := routerMemory(ctx, st)
		if err != nil {
			return nil, err
		}
		rss, _ := st.RSS()
		p50, err := pickTime()
		if err != nil {
			return nil, err
		}
		t.add(n, mb(rss), kb(float64(rss-rssBase)/float64(n)), kb(float64(mem-memBase)/float64(n)), p50, p50-base, ramp)
	}
	// Once, at the largest level reached: its tunnels are still live.
	heapTop := topHeap(ctx, st, o.dist, work)
	t.notes = append(t.notes,
		"Instances are a stand-in (see bench/scale.go): the real router binary, each tunnel ferry's own TLS 1.3 + HTTP/2 tunnel code on loopback, from 8 source addresses 127.0.0.2-9.",
		fmt.Sprintf("The largest level is this machine's open-file limit (%d per process) less 1,000: every tunnel is one descriptor in the router.", lim.Max),
		"Per tunnel: growth over the router with no tunnel, divided by the tunnels. Go heap+stacks is HeapInuse + StackInuse after a GC, from the router's /debug/pprof/heap; RSS also keeps what Go has not yet returned to the OS.",
		"request p50: 200 sequential GET /ping through the router (h2c) to an idle instance, with that many live: the pool's pick is in it.")
	if len(heapTop) > 0 {
		t.notes = append(t.notes, "Where the router's heap goes at the largest level (go tool pprof -sample_index=inuse_space -top):")
		for _, l := range heapTop {
			t.notes = append(t.notes, "    "+l)
		}
	}
	return t, nil
}

func mb(b int64) string   { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }
func kb(b float64) string { return fmt.Sprintf("%.1f KB", b/1024) }
func timeRequest(ctx context.Context, c *http.Client, url string) (time.Duration, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Host = "scale.localhost"
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s", resp.Status)
	}
	return time.Since(start), nil
}

// routerMemory is the router's HeapInuse + StackInuse after a GC.
func routerMemory(ctx context.Context, st *localrun.Stack) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", st.Admin+"/debug/pprof/heap?gc=1&debug=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		for _, k := range []string{"# HeapInuse = ", "# StackInuse = "} {
			if v, ok := strings.CutPrefix(sc.Text(), k); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				total += n
			}
		}
	}
	if total == 0 {
		return 0, errors.New("no memory figures in the router's heap profile")
	}
	return total, nil
}

// invokeStandIn answers Lambda Invoke calls with tunnels (see scaleSection).
type invokeStandIn struct {
	url, caFile string
	srv         *http.Server
	ctx         context.Context
	cancel      context.CancelFunc
	next        atomic.Uint64
	hold        chan struct{} // closed to release held requests
	holdMu      sync.Mutex
	failed      atomic.Int64
}

func startInvokeStandIn(dir string) (*invokeStandIn, error) {
	cert, err := tunnel.GenerateCertificate(24 * time.Hour)
	if err != nil {
		return nil, err
	}
	// A certificate for 127.0.0.1, signed by itself, trusted by the router
	// through AWS_CA_BUNDLE: the SDK then speaks HTTP/2, and thousands of
	// open invokes share a few connections.
	ca, err := selfSignedIP(cert)
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate[0]}), 0o644); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	si := &invokeStandIn{url: "https://" + ln.Addr().String(), caFile: caFile, ctx: ctx, cancel: cancel, hold: make(chan struct{})}
	si.srv = &http.Server{Handler: http.HandlerFunc(si.invoke), TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca}}}
	http2.ConfigureServer(si.srv, &http2.Server{MaxConcurrentStreams: 1 << 20})
	go si.srv.ServeTLS(ln, "", "")
	return si, nil
}

func (si *invokeStandIn) close() {
	si.cancel()
	si.srv.Close()
}

// invoke dials the router as the bootstrap would and serves until the
// tunnel ends or the bench does.
func (si *invokeStandIn) invoke(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	p, ok, err := dialback.Parse(body)
	if err != nil || !ok {
		http.Error(w, `{"errorMessage":"not a dial-back"}`, http.StatusBadRequest)
		return
	}
	n := si.next.Add(1)
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%8))}
	var nc net.Conn
	for attempt := range 5 {
		nc, err = tunnel.Dial(si.ctx, tunnel.DialConfig{Addr: p.Router, Pin: p.Pin, LocalAddr: local, Timeout: 30 * time.Second,
			Hello: tunnel.Hello{Token: p.Token, FunctionARN: p.Function, RequestID: fmt.Sprintf("standin-%d", n),
				MaxConcurrency: p.MaxConcurrency, DeadlineUnixMs: time.Now().Add(15 * time.Minute).UnixMilli(), MemoryMB: 1769}})
		if err == nil || tunnel.IsRejected(err) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	if err != nil {
		si.failed.Add(1)
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		fmt.Fprintf(w, `{"errorMessage":%q}`, err.Error())
		return
	}
	s := tunnel.NewSession(nc, p.MaxConcurrency)
	go func() { <-si.ctx.Done(); nc.Close() }()
	s.Serve(si.ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			si.holdMu.Lock()
			hold := si.hold
			si.holdMu.Unlock()
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok\n")
	}))
	io.WriteString(w, "{}")
}

// ramp grows the router's idle tunnels to n: it holds requests open, one
// per instance (the route's limit is 1), so the router launches an
// instance for each new one, in waves under the router's handshake limit,
// then releases them all.
func (si *invokeStandIn) ramp(ctx context.Context, c *http.Client, st *localrun.Stack, n int) error {
	live := func() (int, error) {
		var pools []struct {
			Instances []struct{} `json:"instances"`
		}
		if err := localrun.GetJSON(ctx, st.Admin+"/pool", &pools); err != nil || len(pools) == 0 {
			return 0, err
		}
		return len(pools[0].Instances), nil
	}
	var wg sync.WaitGroup
	var holdErr atomic.Pointer[error]
	hold := func(k int) {
		for range k {
			wg.Go(func() {
				if _, err := timeRequest(ctx, c, st.Ingress+"/hold"); err != nil {
					holdErr.CompareAndSwap(nil, &err)
				}
			})
		}
	}
	defer func() { si.release(); wg.Wait() }()
	have, err := live()
	if err != nil {
		return err
	}
	hold(have) // occupy the idle instances: every later hold needs a new one
	for have < n {
		wave := min(500, n-have)
		hold(wave)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			got, err := live()
			if err != nil {
				return err
			}
			if got >= have+wave {
				have = got
				break
			}
			if e := holdErr.Load(); e != nil {
				return fmt.Errorf("holding requests: %w (stand-in dial failures: %d)", *e, si.failed.Load())
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("only %d of %d tunnels after 2 minutes (stand-in dial failures: %d)", got, n, si.failed.Load())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (si *invokeStandIn) release() {
	si.holdMu.Lock()
	close(si.hold)
	si.hold = make(chan struct{})
	si.holdMu.Unlock()
}

// selfSignedIP re-signs cert's key as a self-signed CA certificate for
// 127.0.0.1.
func selfSignedIP(cert tls.Certificate) (tls.Certificate, error) {
	tmpl := *cert.Leaf
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage |= x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(nil, &tmpl, &tmpl, cert.Leaf.PublicKey, cert.PrivateKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: cert.PrivateKey, Leaf: leaf}, nil
}

// topHeap is the top of the router's in-use heap profile, as go tool
// pprof prints it.
func topHeap(ctx context.Context, st *localrun.Stack, dist, dir string) []string {
	path := filepath.Join(dir, "heap.pprof")
	req, _ := http.NewRequestWithContext(ctx, "GET", st.Admin+"/debug/pprof/heap?gc=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	f, err := os.Create(path)
	if err == nil {
		io.Copy(f, resp.Body)
		f.Close()
	}
	resp.Body.Close()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=10",
		filepath.Join(dist, "ferry-router"), path).Output()
	if err != nil {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(l, "Showing") || strings.HasPrefix(strings.TrimSpace(l), "flat") || strings.Contains(l, "kB") || strings.Contains(l, "MB") {
			lines = append(lines, l)
		}
	}
	return lines
}
