package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"github.com/ferryrun/ferry/localstack/localrun"
)

// coldSection: from a request reaching a router with no instance to its
// first byte, broken into parts from the router's debug log and the
// emulator's REPORT.
func coldSection(ctx context.Context, o options) (*table, error) {
	trials := 5
	if o.short {
		trials = 2
	}
	var fns []localrun.Function
	for i := range trials {
		fns = append(fns, localrun.Function{Name: fmt.Sprintf("cold%d", i), Limit: 10})
	}
	logs := &lockedBuffer{}
	st, err := localrun.Start(ctx, localrun.Config{Dist: o.dist, Functions: fns,
		RouterEnv: []string{"FERRY_ROUTER_LOG_LEVEL=debug"}, RouterLog: logs})
	if err != nil {
		return nil, err
	}
	defer st.Stop()

	t := &table{
		title:   "3. Cold path: a request to a router with no instance, to its first byte",
		command: "go run ./bench -dist dist/bench -only cold",
		header:  []string{"sandbox", "first byte", "invoke + runtime API", "sandbox start (init)", "TLS + hello", "first stream", "router-added"},
	}
	type parts struct{ ttfb, invoke, init, handshake, stream, router []float64 }
	measure := func(fn string, into *parts) error {
		before, err := st.Stats(ctx, fn)
		if err != nil {
			return err
		}
		ttfb, err := firstByte(ctx, st.Ingress+warmPath, fn+".localhost")
		if err != nil {
			return err
		}
		// A stream on the now-warm instance: the path's own cost.
		warm, err := firstByte(ctx, st.Ingress+warmPath, fn+".localhost")
		if err != nil {
			return err
		}
		launch, handshake, err := joinTimes(logs.Bytes(), fn)
		if err != nil {
			return err
		}
		if err := st.Quiesce(ctx, fn); err != nil {
			return err
		}
		after, err := st.Stats(ctx, fn)
		if err != nil {
			return err
		}
		init := time.Duration(after.InitMs-before.InitMs) * time.Millisecond
		stream := ttfb - launch - handshake
		into.ttfb = append(into.ttfb, float64(ttfb))
		into.invoke = append(into.invoke, float64(launch-init))
		into.init = append(into.init, float64(init))
		into.handshake = append(into.handshake, float64(handshake))
		into.stream = append(into.stream, float64(stream))
		into.router = append(into.router, float64(stream-warm))
		return nil
	}
	var cold, warm parts
	for _, f := range fns {
		if err := measure(f.Name, &cold); err != nil {
			return nil, err
		}
	}
	for _, f := range fns { // the same functions again: their sandboxes are warm
		if err := measure(f.Name, &warm); err != nil {
			return nil, err
		}
	}
	for _, r := range []struct {
		name string
		p    parts
	}{{"new", cold}, {"warm (reused)", warm}} {
		t.add(r.name, time.Duration(median(r.p.ttfb)), time.Duration(median(r.p.invoke)), time.Duration(median(r.p.init)),
			time.Duration(median(r.p.handshake)), time.Duration(median(r.p.stream)), time.Duration(median(r.p.router)))
	}
	t.notes = append(t.notes,
		fmt.Sprintf("Medians of %d requests, each to a function with no live instance; \"new\" starts a sandbox (bootstrap + app process), \"warm\" reuses a frozen one.", trials),
		"invoke + runtime API: the router's launch to the tunnel's TCP accept, less the sandbox's init (invoke call, event delivery through the Runtime API, the bootstrap's dial).",
		"sandbox start: the emulator's Init Duration (processes start, app ready). TLS + hello: the router's handshake time.",
		"first stream: what is left of the first byte (the stream's trip to the app and back); router-added: that, less the same request on the instance once warm.")
	return t, nil
}

// joinTimes reads the last "instance joined" debug line for fn.
func joinTimes(log []byte, fn string) (launch, handshake time.Duration, err error) {
	var found bool
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg       string `json:"msg"`
			Function  string `json:"function"`
			Launch    *int64 `json:"launch_to_accept_us"`
			Handshake int64  `json:"handshake_us"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != "instance joined" || l.Function != fn || l.Launch == nil {
			continue
		}
		launch, handshake, found = time.Duration(*l.Launch)*time.Microsecond, time.Duration(l.Handshake)*time.Microsecond, true
	}
	if !found {
		return 0, 0, fmt.Errorf("no \"instance joined\" line for %s in the router's log", fn)
	}
	return launch, handshake, nil
}

// firstByte sends one request and returns the time to its first response byte.
func firstByte(ctx context.Context, url, host string) (time.Duration, error) {
	var first time.Time
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", url, nil)
	req.Host = host
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return first.Sub(start), nil
}

// burst sends n requests at once, each on its own connection.
func burst(ctx context.Context, url, host string, n int) ([]time.Duration, int) {
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs int
		wg   sync.WaitGroup
	)
	gate := make(chan struct{})
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			req.Host = host
			<-gate
			start := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s", resp.Status)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				return
			}
			lats = append(lats, time.Since(start))
		})
	}
	close(gate)
	wg.Wait()
	return lats, errs
}

// lockedBuffer collects a process's output for reading while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
