package main_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrun/ferry/localstack/lambdaemu"
	"github.com/ferryrun/ferry/router/pool"
)

// warm counts the pool's warm instances.
func warm(p pool.State) (n int, ids []string) {
	for _, in := range p.Instances {
		if in.Warm {
			n++
			ids = append(ids, in.RequestID)
		}
	}
	return n, ids
}

// A function with min_instances 2 has 2 live instances from the router's
// start, through a silence longer than its timeout (each replaced before
// its drain), and a request after it finds one of them: no launch on its
// path. A killed instance is replaced; what they cost idle is published.
func TestMinInstances(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "routes.json")
	os.WriteFile(routes, []byte(`{"routes": [{"function": "app", "path_prefix": "/", "min_instances": 2}]}`), 0o644)
	s := startStack(t, stackOpts{timeout: 6 * time.Second,
		routerEnv: map[string]string{"FERRY_ROUTER_ROUTES": "", "FERRY_ROUTER_CONFIG": routes}})

	awaitWarm := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if n, _ := warm(s.pool()); n >= 2 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no 2 warm instances within 15s: %+v", what, s.pool())
			}
		}
	}
	awaitWarm("at the router's start, with no request")

	// A silence of 1.5 timeouts: every instance is replaced, and the pool
	// never holds fewer than 2.
	start, seen := time.Now(), map[string]bool{}
	for time.Since(start) < 9*time.Second {
		p := s.pool()
		n, ids := warm(p)
		if n < 2 {
			t.Fatalf("%v into the silence: %d warm instances, want 2 at all times: %+v", time.Since(start).Round(time.Millisecond), n, p)
		}
		for _, id := range ids {
			seen[id] = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(seen) < 4 {
		t.Errorf("%d warm instances over 9 s of a 6 s function, want each replaced (4 or more)", len(seen))
	}

	before := s.pool()
	served := map[string]int64{}
	for _, in := range before.Instances {
		served[in.RequestID] = in.Served
	}
	if r := s.get("/work?wait_ms=5"); r.status != 200 {
		t.Fatalf("request after the silence: %d %s %v", r.status, r.body, r.err)
	}
	after := s.pool()
	metWarm := false
	for _, in := range after.Instances {
		if was, ok := served[in.RequestID]; ok && in.Served > was {
			metWarm = true
		}
	}
	if !metWarm || after.Stats.Plain != 0 {
		t.Errorf("the request after the silence was not served by an instance live before it:\nbefore %+v\nafter %+v", before, after)
	}

	// Kill one warm instance's sandbox: the pool is back to 2.
	var sb []lambdaemu.SandboxInfo
	resp, err := http.Get(s.emulator + "/_emulator/sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&sb)
	resp.Body.Close()
	var victim *lambdaemu.SandboxInfo
	for i := range sb {
		if !sb[i].Idle {
			victim = &sb[i]
			break
		}
	}
	if victim == nil {
		t.Fatalf("no sandbox running an invocation: %+v", sb)
	}
	_, warmBefore := warm(s.pool())
	syscall.Kill(-victim.PID, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, ids := warm(s.pool())
		if len(ids) < 2 || !strings.Contains(strings.Join(ids, ","), strings.Join(warmBefore, ",")) {
			break // one is gone
		}
		if time.Now().After(deadline) {
			t.Fatalf("killing sandbox %s left the pool as it was: %+v", victim.ID, s.pool())
		}
	}
	awaitWarm("after a warm instance was killed")

	// What they cost, idle, is published.
	if idle := s.awaitEMF("IdleMs"); idle < 1000 {
		t.Errorf("IdleMs %.0f after 2 warm instances idled for 9 s and more, want their idle time", idle)
	}
}
