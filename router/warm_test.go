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
// its drain, not launched over and over), and a request after it finds one
// of them: no launch on its path. A killed instance is replaced; what they
// cost idle is published.
func TestMinInstances(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "routes.json")
	os.WriteFile(routes, []byte(`{"routes": [{"function": "app", "path_prefix": "/", "min_instances": 2}]}`), 0o644)
	s := startStack(t, stackOpts{timeout: 8 * time.Second,
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

	// A silence of 1.5 timeouts: every instance is replaced ahead of its
	// drain (an 8 s instance, up to 4 s ahead), so the pool never holds
	// fewer than 2; and only replaced, about twice per slot.
	start, seen := time.Now(), map[string]bool{}
	for time.Since(start) < 12*time.Second {
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
	launches := s.pool().Stats.Launches
	t.Logf("%d warm instances seen, %d launches, over 12 s", len(seen), launches)
	if len(seen) < 4 || launches > 14 {
		t.Errorf("%d warm instances seen and %d launches over 12 s of 8 s instances, want each replaced (4 or more seen) and no more (about 8 launches)",
			len(seen), launches)
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

	// Kill the sandbox of the freshest warm instance: the pool sees an
	// early end, and is back to 2.
	var fresh pool.InstanceState
	for _, in := range s.pool().Instances {
		if in.Warm && in.LeftMs > fresh.LeftMs {
			fresh = in
		}
	}
	var sb []lambdaemu.SandboxInfo
	resp, err := http.Get(s.emulator + "/_emulator/sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&sb)
	resp.Body.Close()
	var victim *lambdaemu.SandboxInfo
	for i := range sb {
		if sb[i].Invocation == fresh.RequestID {
			victim = &sb[i]
		}
	}
	if victim == nil {
		t.Fatalf("no sandbox runs instance %s: %+v", fresh.RequestID, sb)
	}
	syscall.Kill(-victim.PID, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(s.routerLog.String(), "a warm instance ended before its deadline"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the pool did not see warm instance %s killed: %+v", fresh.RequestID, s.pool())
		}
	}
	awaitWarm("after a warm instance was killed")

	// What they cost, idle, is published.
	if idle := s.awaitEMF("IdleMs"); idle < 1000 {
		t.Errorf("IdleMs %.0f after 2 warm instances idled for 12 s and more, want their idle time", idle)
	}
}
