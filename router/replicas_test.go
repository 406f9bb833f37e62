package main_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/localstack/balancer"
	"github.com/ferryrun/ferry/router/ring"
)

// replicaSet is several routers sharing one emulator and function, as
// router tasks share a deployment, behind a real L7 balancer (nginx,
// round-robin, as an ALB spreads requests over tasks).
type replicaSet struct {
	t       *testing.T
	routers []*stack // each a router; all share routers[0]'s emulator
	peers   []string // their peer addresses, in the same order
	lb      *balancer.Balancer
}

// peerSecret is the token secret the replicas share (their peer key is
// derived from it).
const peerSecret = "replicas-share-this-token-secret-0123456789"

// startReplicas starts n routers behind the balancer. With lateOwner,
// the one that will own the function app once it joins is not started:
// join starts it.
func startReplicas(t *testing.T, n int, o stackOpts, lateOwner ...bool) *replicaSet {
	t.Helper()
	rs := &replicaSet{t: t}
	for range n {
		rs.peers = append(rs.peers, freeAddr(t))
	}
	late := len(lateOwner) > 0 && lateOwner[0]
	if late {
		// The owner last, where join finds it.
		owner := slices.Index(rs.peers, ring.Rank("app", rs.peers)[0])
		rs.peers[owner], rs.peers[n-1] = rs.peers[n-1], rs.peers[owner]
	}
	env := map[string]string{
		"FERRY_ROUTER_PEERS": strings.Join(rs.peers, ","), "FERRY_ROUTER_TOKEN_SECRET": peerSecret,
		"FERRY_ROUTER_PEER_LISTEN": rs.peers[0], "FERRY_ROUTER_PEER_ADVERTISE": rs.peers[0],
		"FERRY_ROUTER_TRUSTED_PROXIES": "127.0.0.1/32", // the balancer
	}
	for k, v := range o.routerEnv {
		env[k] = v
	}
	o.routerEnv = env
	first := startStack(t, o)
	rs.routers = append(rs.routers, first)
	for i := 1; i < n; i++ {
		rs.routers = append(rs.routers, rs.replica(i))
		if !late || i < n-1 {
			rs.join(i)
		}
	}
	running := n
	if late {
		running--
	}
	rs.awaitRing(running)
	var ingresses []string
	for _, s := range rs.routers {
		ingresses = append(ingresses, strings.TrimPrefix(s.ingress, "http://"))
	}
	lb, err := balancer.Start(t.Context(), t.TempDir(), freeAddr(t), ingresses)
	if err != nil {
		t.Fatal(err)
	}
	rs.lb = lb
	t.Cleanup(func() {
		lb.Stop()
		if t.Failed() {
			t.Logf("balancer log (tail):\n%s", tail(lb.ErrorLog(), 2000))
		}
	})
	return rs
}

// replica sets up router i beside the first, on addresses of its own,
// without starting it.
func (rs *replicaSet) replica(i int) *stack {
	t, first := rs.t, rs.routers[0]
	s := &stack{t: t, emulator: first.emulator, fnEnv: first.fnEnv, routerCmd: first.routerCmd,
		routerOut: &testbin.Buffer{}, routerLog: &testbin.Buffer{}}
	ingress, admin := freeAddr(t), freeAddr(t)
	s.ingress, s.admin = "http://"+ingress, "http://"+admin
	s.routerEnv = append(slices.Clone(first.routerEnv), "FERRY_ROUTER_LISTEN="+ingress, "FERRY_ROUTER_ADMIN_LISTEN="+admin,
		"FERRY_ROUTER_PEER_LISTEN="+rs.peers[i], "FERRY_ROUTER_PEER_ADVERTISE="+rs.peers[i])
	return s
}

// join starts router i and waits until it is ready.
func (rs *replicaSet) join(i int) {
	t, s := rs.t, rs.routers[i]
	if err := s.startRouter(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.router.Process.Signal(syscall.SIGTERM)
		s.router.Wait()
		if t.Failed() {
			t.Logf("router %d log (tail):\n%s", i, tail(s.routerLog.String(), 3000))
		}
	})
	waitHTTP(t, s.admin+"/readyz")
}

type ringState struct {
	Self   string              `json:"self"`
	Live   []string            `json:"live"`
	Owners map[string][]string `json:"owners"`
}

func (s *stack) ring() ringState {
	var st ringState
	resp, err := http.Get(s.admin + "/ring")
	if err != nil {
		return st
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&st)
	return st
}

// awaitRing waits until every running router sees n members.
func (rs *replicaSet) awaitRing(n int) {
	rs.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ok := true
		for _, s := range rs.routers {
			if s.router != nil && s.router.ProcessState == nil && len(s.ring().Live) != n {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for i, s := range rs.routers {
				rs.t.Logf("router %d sees %v", i, s.ring().Live)
			}
			rs.t.Fatalf("the routers never all saw %d members", n)
		}
	}
}

// owner is the index of the router that owns the function app.
func (rs *replicaSet) owner() int {
	rs.t.Helper()
	owners := rs.routers[0].ring().Owners["app"]
	if len(owners) == 0 {
		rs.t.Fatal("no owner for app")
	}
	i := slices.Index(rs.peers, owners[0])
	if i < 0 {
		rs.t.Fatalf("owner %s is not a replica: %v", owners[0], rs.peers)
	}
	return i
}

// fetch GETs url.
func fetch(url string) reply {
	resp, err := client.Get(url)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(b), header: resp.Header, err: err}
}

// TestReplicasShareInstances: requests spread over three replicas by the
// balancer reach one owner's instances, as one router's would, and are
// counted once.
func TestReplicasShareInstances(t *testing.T) {
	rs := startReplicas(t, 3, stackOpts{})
	owner := rs.owner()
	const n = 30
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() { statuses[i] = fetch(rs.lb.URL + "/work?wait_ms=400").status })
	}
	wg.Wait()
	for i, st := range statuses {
		if st != 200 {
			t.Errorf("request %d: %d", i, st)
		}
	}
	// One router would take the 30 with one invocation (64 a piece);
	// three that did not share would launch at least three.
	if inv := rs.routers[0].stats().Invocations; inv > 2 {
		t.Errorf("%d invocations for %d concurrent requests over 3 replicas; one router needs 1", inv, n)
	}
	// Each request counted once, where it ran; the others counted what
	// they forwarded, and launched nothing.
	rs.routers[owner].awaitEMF("Invocations")
	time.Sleep(1500 * time.Millisecond) // one more interval: every router's figures are out
	var requests, forwarded float64
	for i, s := range rs.routers {
		if inv := s.emfSum("Invocations"); i != owner && inv != 0 {
			t.Errorf("router %d (not the owner) launched %v invocations of its own", i, inv)
		}
		r, f := s.emfSum("Requests"), s.emfSum("ForwardedRequests")
		requests += r
		forwarded += f
		if i != owner && r != 0 {
			t.Errorf("router %d counted %v requests it forwarded as its own", i, r)
		}
		if rsz := s.emfSum("RingSize"); rsz == 0 {
			t.Errorf("router %d published no RingSize", i)
		}
	}
	if requests != n || forwarded < n/3 {
		t.Errorf("Requests summed %v over the replicas (want %d), ForwardedRequests %v (want about %d)", requests, n, forwarded, 2*n/3)
	}

	// The app sees the client as the router it reached would show it:
	// the forward hop adds nothing to X-Forwarded-For.
	var seen []string
	for _, s := range rs.routers {
		req, _ := http.NewRequest("GET", s.ingress+"/echo", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var echo struct{ Headers http.Header }
		json.NewDecoder(resp.Body).Decode(&echo)
		resp.Body.Close()
		noFerryHeaders(t, resp.Header)
		if k := echo.Headers.Get("Ferry-Peer-Key"); k != "" {
			t.Errorf("the app saw the peer key")
		}
		seen = append(seen, strings.Join(echo.Headers.Values("X-Forwarded-For"), ","))
	}
	if seen[0] != seen[1] || seen[1] != seen[2] || seen[0] != "203.0.113.7, 127.0.0.1" {
		t.Errorf("X-Forwarded-For as the app saw it through each replica: %q; want each %q", seen, "203.0.113.7, 127.0.0.1")
	}
}

// TestReplicaKilled: kill -9 of the replica that owns the function, under
// steady load through the balancer. Only requests in flight on it fail,
// each with an answer (none hangs); every later one is served, by the
// next owner; and the dead replica's instances end their invocations
// within 2 s, not at their deadline.
func TestReplicaKilled(t *testing.T) {
	opts := ledgerApp(t)
	opts.timeout = 60 * time.Second
	rs := startReplicas(t, 3, opts)
	victim := rs.routers[rs.owner()]
	d := chaosFor(t)
	faultAt := min(d/3, 2*time.Second)
	var orphans []string
	var killed time.Time
	var ended time.Duration
	entries := ledger(t, rs.lb.URL, "POST", "/work?wait_ms=300", 30, d, false, func() {
		for _, in := range victim.pool().Instances {
			orphans = append(orphans, in.RequestID)
		}
		victim.router.Process.Kill()
		killed = time.Now()
		for time.Since(killed) < 10*time.Second {
			running := false
			for _, sb := range victim.sandboxes() {
				running = running || slices.Contains(orphans, sb.Invocation)
			}
			if !running {
				ended = time.Since(killed)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		ended = -1
	}, faultAt)
	account(t, entries, faultAt, expect{allowed: allow(started), recovered: 500 * time.Millisecond, servedBefore: false})
	ranOnce(t, rs.routers[0], entries)
	switch {
	case len(orphans) == 0:
		t.Error("the owner had no live instance when it was killed: the test proved nothing about them")
	case ended < 0 || ended > 2*time.Second:
		t.Errorf("the killed replica's %d instances were still running %v after the kill (want them ended within 2 s)", len(orphans), 10*time.Second)
	default:
		t.Logf("the killed replica's %d instances ended %v after the kill", len(orphans), ended.Round(time.Millisecond))
	}
}

// TestReplicaLeavesAndJoins: the owner stops (SIGTERM: it leaves the
// ring, then drains) and starts again under load. Ownership moves to the
// next replica and back, and no request fails. The requests are POSTs,
// which the balancer never sends twice: a request a replica dropped
// would show as failed, not be hidden by a retry.
func TestReplicaLeavesAndJoins(t *testing.T) {
	opts := ledgerApp(t)
	rs := startReplicas(t, 3, opts)
	i := rs.owner()
	owner := rs.routers[i]
	d := max(chaosFor(t), 8*time.Second)
	var back time.Time
	entries := ledger(t, rs.lb.URL, "POST", "/work?wait_ms=200", 30, d, false, func() {
		owner.restartRouter()
		back = time.Now()
	}, 2*time.Second)
	account(t, entries, 2*time.Second, expect{allowed: allow()})
	ranOnce(t, rs.routers[0], entries)
	rs.awaitRing(3)
	if served := owner.emfSumSince("Requests", back); served == 0 {
		t.Errorf("the restarted owner served no request after it came back: it took no share of ownership")
	}
}

// TestReplicasKeepOneMinimum: a function's min_instances is kept once for
// the deployment, by its owner, not once per replica.
func TestReplicasKeepOneMinimum(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "routes.json")
	os.WriteFile(routes, []byte(`{"routes": [{"function": "app", "path_prefix": "/", "min_instances": 1}]}`), 0o644)
	rs := startReplicas(t, 3, stackOpts{timeout: 60 * time.Second,
		routerEnv: map[string]string{"FERRY_ROUTER_ROUTES": "", "FERRY_ROUTER_CONFIG": routes}})
	want := make([]int, 3)
	want[rs.owner()] = 1
	// Replicas that started before their peers answered took themselves
	// for the owner for a moment; the others close what they launched.
	var warm []int
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		warm = warm[:0]
		for _, s := range rs.routers {
			warm = append(warm, len(s.pool().Instances))
		}
		if slices.Equal(warm, want) && rs.routers[0].stats().Running == 1 {
			break
		}
	}
	if !slices.Equal(warm, want) {
		t.Fatalf("live instances per replica = %v, want %v (one warm instance, the owner's)", warm, want)
	}
	if run := rs.routers[0].stats().Running; run != 1 {
		t.Fatalf("%d invocations running, want the one warm instance", run)
	}
}

// TestReplicaJoinsUnderLoad: a replica added under load takes its share
// of ownership (here, the function's: rendezvous ranks it first) without a
// failed request, and serves the function from then on.
func TestReplicaJoinsUnderLoad(t *testing.T) {
	rs := startReplicas(t, 3, ledgerApp(t), true)
	newcomer := rs.routers[2]
	if owners := rs.routers[0].ring().Owners["app"]; len(owners) == 0 || owners[0] == rs.peers[2] {
		t.Fatalf("before it joins, the newcomer owns app already: %v", owners)
	}
	d := max(chaosFor(t), 8*time.Second)
	var joined time.Time
	entries := ledger(t, rs.lb.URL, "POST", "/work?wait_ms=200", 30, d, false, func() {
		rs.join(2)
		joined = time.Now()
	}, 2*time.Second)
	account(t, entries, 2*time.Second, expect{allowed: allow()})
	ranOnce(t, rs.routers[0], entries)
	rs.awaitRing(3)
	if owners := rs.routers[0].ring().Owners["app"]; len(owners) == 0 || owners[0] != rs.peers[2] {
		t.Errorf("after it joined, app's owners are %v; want the newcomer %s first", owners, rs.peers[2])
	}
	if served := newcomer.emfSumSince("Requests", joined); served == 0 {
		t.Error("the newcomer served no request after it joined")
	}
}
