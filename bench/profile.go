package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferryrun/ferry/localstack/localrun"
)

// profileSection: a CPU profile of ferry-router on the warm path, its top
// 10 functions by flat time.
func profileSection(ctx context.Context, o options) (*table, error) {
	seconds, clients := 10, 8
	if o.short {
		seconds = 4
	}
	st, err := localrun.Start(ctx, localrun.Config{Dist: o.dist,
		Functions: []localrun.Function{{Name: "warm", Limit: 64, Timeout: 10 * time.Minute,
			Env: map[string]string{"FERRY_IDLE_LINGER": "5m", "FERRY_CPU_ADMISSION": "off"}}},
		RouterEnv: []string{"FERRY_ROUTER_PPROF=true"}})
	if err != nil {
		return nil, err
	}
	defer st.Stop()
	attack(ctx, st.Ingress+warmPath, "warm.localhost", clients, time.Second) // warm up

	prof, err := os.CreateTemp("", "ferry-router-*.pprof")
	if err != nil {
		return nil, err
	}
	defer os.Remove(prof.Name())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", st.Admin, seconds), nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.Copy(prof, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	res := attack(ctx, st.Ingress+warmPath, "warm.localhost", clients, time.Duration(seconds)*time.Second)
	if err := <-done; err != nil {
		return nil, fmt.Errorf("fetching the profile: %w", err)
	}
	prof.Close()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=10",
		filepath.Join(o.dist, "ferry-router"), prof.Name()).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof: %w", err)
	}
	t := &table{
		title:   "6. ferry-router CPU profile, warm path",
		command: "go run ./bench -dist dist/bench -only profile",
		header:  []string{"flat", "flat%", "sum%", "cum", "cum%", "function"},
	}
	var summary []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.HasSuffix(f[1], "%") && strings.HasSuffix(f[4], "%") {
			t.add(f[0], f[1], f[2], f[3], f[4], "`"+strings.Join(f[5:], " ")+"`")
		} else if strings.Contains(l, "Total samples") || strings.HasPrefix(l, "Showing nodes") {
			summary = append(summary, strings.TrimSpace(l))
		}
	}
	t.notes = append(t.notes, fmt.Sprintf("GET %s through the router to one warm instance, %d clients for %ds: %d requests (%.0f/s) during the profile.",
		warmPath, clients, seconds, res.requests, res.rps()))
	t.notes = append(t.notes, summary...)
	return t, nil
}
