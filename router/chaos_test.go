package main_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/ferryrun/ferry/internal/load"
	"github.com/ferryrun/ferry/internal/proctree"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
	"github.com/ferryrun/ferry/localstack/localrun"
	"github.com/ferryrun/ferry/router/pool"
)

// The chaos tests: load at a fixed rate, open loop, through the real
// router, emulator, bootstrap and app, while a fault strikes; then every
// request is accounted for in a ledger. Each must have ended within its
// limit (none missing, none hung) in an outcome the fault allows, a
// served one must carry its own answer, and once the fault is over
// everything must be served again.

// The outcomes a request can end in.
const (
	served    = "2xx"
	started   = "502 (started, then failed)"
	refused   = "503 (refused)"
	clientErr = "4xx"
	unreached = "no connection (the router was down)"
	// cut: the response's headers came, then its body broke off. The
	// router cannot answer 502 once it has passed the headers on, so a
	// request started on an instance that dies as it answers ends so; a
	// router that dies mid-answer too.
	cut   = "cut mid-body (started, then failed)"
	hung  = "hung past its limit"
	other = "other"
)

// chaosFor is the length of each chaos test's load: a few seconds in make
// test, FERRY_CHAOS_FOR (make chaos) for longer.
func chaosFor(t *testing.T) time.Duration {
	if v := os.Getenv("FERRY_CHAOS_FOR"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("FERRY_CHAOS_FOR=%q: want a duration of 5s or more", v)
		}
		return d
	}
	return 7 * time.Second
}

// hangLimit is how long a request may take before it counts as hung: the
// router's queue timeout (10 s) and a launch, with room to spare.
const hangLimit = 25 * time.Second

type entry struct {
	id     int
	path   string
	at     time.Duration // scheduled send time, from the start
	took   time.Duration // from the scheduled send time
	status int           // 0: no response
	err    string        // the transport's error, when no response came
	body   string
}

func (e entry) outcome() string {
	switch {
	case e.status == 0 && (strings.Contains(e.err, "Client.Timeout") || strings.Contains(e.err, "deadline exceeded")):
		return hung
	case e.status == 0 && strings.Contains(e.err, "unexpected EOF"):
		return cut
	case e.status == 0 && isRefused(e.err):
		return unreached
	case e.status == 0:
		return other
	case e.status >= 200 && e.status < 300:
		return served
	case e.status == http.StatusBadGateway:
		return started
	case e.status == http.StatusServiceUnavailable:
		return refused
	case e.status >= 400 && e.status < 500:
		return clientErr
	}
	return other
}

func isRefused(err string) bool {
	for _, s := range []string{"connection refused", "connection reset", "EOF", "server closed"} { // the last: a kept-alive connection the old router closed
		if strings.Contains(err, s) {
			return true
		}
	}
	return false
}

// ledger sends requests at rate per second for d, open loop (internal/load:
// each at its scheduled time, whatever the earlier ones are doing),
// alternating method path and GET /echo (which answers with the request's
// own id), and runs fault at faultAt. fresh sends each on a connection of
// its own. It returns an entry for every request scheduled, by id; one
// never answered has no path.
func ledger(t *testing.T, base, method, path string, rate float64, d time.Duration, fresh bool, fault func(), faultAt time.Duration) []entry {
	t.Helper()
	sched := load.Constant(rate, d)
	paths := make([]string, len(sched))
	for i := range paths {
		p := path
		if i%2 == 1 {
			p = "/echo"
		}
		paths[i] = p + fmt.Sprintf("%sid=%d", map[bool]string{true: "&", false: "?"}[strings.Contains(p, "?")], i)
	}
	var wg sync.WaitGroup
	if fault != nil {
		wg.Go(func() {
			time.Sleep(faultAt) // drives the scenario, not synchronisation
			fault()
		})
	}
	hits := load.Open(t.Context(), sched, func(i int) load.Target {
		m := method
		if i%2 == 1 {
			m = "GET"
		}
		return load.Target{Method: m, URL: base + paths[i]}
	},
		load.Options{Timeout: hangLimit, NoKeepAlive: fresh})
	wg.Wait()
	entries := make([]entry, len(sched))
	for _, h := range hits {
		e := entry{id: h.Target, path: paths[h.Target], at: h.Due, took: h.Took, status: h.Code, body: string(h.Body)}
		if h.Code == 0 {
			e.err = h.Err
		}
		entries[h.Target] = e
	}
	return entries
}

// expect is what a fault allows.
type expect struct {
	allowed map[string]bool
	// recovered: requests scheduled this long after the fault struck are
	// all served. Zero: no such window (the fault lasts the whole run).
	recovered time.Duration
	// servedBefore: requests scheduled before the fault struck are all
	// served (what was in flight then finished).
	servedBefore bool
}

func allow(outcomes ...string) map[string]bool {
	m := map[string]bool{served: true}
	for _, o := range outcomes {
		m[o] = true
		if o == started || o == unreached {
			m[cut] = true
		}
	}
	return m
}

// account checks every entry against e and returns the tally.
func account(t *testing.T, entries []entry, faultAt time.Duration, e expect) map[string]int {
	t.Helper()
	tally := map[string]int{}
	var bad []string
	for i, en := range entries {
		o := en.outcome()
		tally[o]++
		switch {
		case en.path == "":
			bad = append(bad, fmt.Sprintf("request %d: missing from the ledger", i))
		case !e.allowed[o] || en.took > hangLimit:
			bad = append(bad, fmt.Sprintf("request %d (%s at %v): %s after %v: %d %s %.100q", i, en.path, en.at.Round(time.Millisecond), o, en.took.Round(time.Millisecond), en.status, en.err, en.body))
		case o == served && strings.HasPrefix(en.path, "/echo") && !strings.Contains(en.body, `"query":"id=`+strconv.Itoa(en.id)+`"`):
			bad = append(bad, fmt.Sprintf("request %d (%s): served someone else's answer: %.200q", i, en.path, en.body))
		case e.servedBefore && en.at < faultAt && o != served:
			bad = append(bad, fmt.Sprintf("request %d (%s at %v, before the fault): %s: %d %s %.100q", i, en.path, en.at.Round(time.Millisecond), o, en.status, en.err, en.body))
		case e.recovered > 0 && en.at >= faultAt+e.recovered && o != served:
			bad = append(bad, fmt.Sprintf("request %d (%s at %v, %v after the fault): %s, when the fault was over: %d %s %.100q",
				i, en.path, en.at.Round(time.Millisecond), (en.at-faultAt).Round(time.Millisecond), o, en.status, en.err, en.body))
		}
	}
	if e.recovered > 0 && !slices.ContainsFunc(entries, func(en entry) bool { return en.at >= faultAt+e.recovered }) {
		t.Errorf("no request was scheduled %v after the fault: the recovery went unchecked", e.recovered)
	}
	var slowest time.Duration
	for _, en := range entries {
		slowest = max(slowest, en.took)
	}
	t.Logf("%d requests: %v; slowest %v", len(entries), tally, slowest.Round(time.Millisecond))
	for _, b := range bad[:min(len(bad), 15)] {
		t.Error(b)
	}
	if len(bad) > 15 {
		t.Errorf("... and %d more", len(bad)-15)
	}
	return tally
}

// sandboxes lists the emulator's live sandboxes (none if it cannot say:
// faults run beside the test, where t.Fatal cannot stop it).
func (s *stack) sandboxes() []lambdaemu.SandboxInfo {
	resp, err := http.Get(s.emulator + "/_emulator/sandboxes")
	if err != nil {
		s.t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	var sb []lambdaemu.SandboxInfo
	if err := json.NewDecoder(resp.Body).Decode(&sb); err != nil {
		s.t.Error(err)
	}
	return sb
}

// busySandbox is the process group of a sandbox serving requests, and
// false if none is within 5 s (then no signal may be sent: to group 0 it
// would reach the test itself).
func (s *stack) busySandbox() (int, bool) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		// The router's word for which invocations hold requests: one
		// that lingers idle, also in an invocation, holds none.
		serving := map[string]bool{}
		if resp, err := http.Get(s.admin + "/pool"); err == nil {
			var pools []pool.State
			json.NewDecoder(resp.Body).Decode(&pools)
			resp.Body.Close()
			for _, p := range pools {
				for _, in := range p.Instances {
					serving[in.RequestID] = in.InFlight > 0
				}
			}
		}
		for _, sb := range s.sandboxes() {
			if !sb.Idle && sb.PID > 1 && serving[sb.Invocation] {
				return sb.PID, true
			}
		}
	}
	s.t.Error("no sandbox was busy: the fault did not strike")
	return 0, false
}

// appOf is the pid of the app process in the sandbox whose bootstrap is
// pid, or 0.
func appOf(pid int) int {
	for _, p := range proctree.Descendants(pid) {
		if proctree.Status(p, "Name") == "goapp" && proctree.Alive(p) {
			return p
		}
	}
	return 0
}

// restartRouter stops the router with SIGTERM (it drains) and starts it
// again on the same addresses, and waits until it is ready.
func (s *stack) restartRouter() {
	s.router.Process.Signal(syscall.SIGTERM)
	s.router.Wait()
	if err := s.startRouter(); err != nil {
		s.t.Error(err)
		return
	}
	if err := localrun.WaitHTTP(context.Background(), s.admin+"/readyz"); err != nil {
		s.t.Errorf("the restarted router never became ready: %v", err)
	}
}

// localAWS runs the local AWS (moto) at addr until stop, which may be
// called more than once; start runs it again at the same address.
type localAWS struct {
	addr string
	aws  *testbin.LocalAWS
}

func (m *localAWS) start() (err error) {
	port, _ := strconv.Atoi(m.addr[strings.LastIndexByte(m.addr, ':')+1:])
	m.aws, err = testbin.StartLocalAWS(port, io.Discard)
	return err
}

// stop ends it at once, as an outage would.
func (m *localAWS) stop() {
	if m.aws != nil {
		m.aws.Stop(syscall.SIGKILL, 0)
		m.aws = nil
	}
}

// ledgerApp is a stack whose app writes each POST /work's id to a file
// as it takes the request (goapp's GOAPP_LEDGER), for ranOnce.
func ledgerApp(t *testing.T) stackOpts {
	return stackOpts{fnEnv: map[string]string{"GOAPP_LEDGER": filepath.Join(t.TempDir(), "ran")}}
}

// ranOnce holds the app's ledger to the client's: a started request is
// never replayed, so no POST ran twice; one served ran exactly once; one
// refused never ran.
func ranOnce(t *testing.T, s *stack, entries []entry) {
	b, err := os.ReadFile(s.fnEnv["GOAPP_LEDGER"])
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]int{}
	for id := range strings.FieldsSeq(string(b)) {
		ran[id]++
	}
	posts, failed := 0, 0
	for _, en := range entries {
		if !strings.HasPrefix(en.path, "/work") {
			continue
		}
		posts++
		id := strconv.Itoa(en.id)
		switch o := en.outcome(); {
		case ran[id] > 1:
			t.Errorf("POST %s ran %d times: replayed (%s)", en.path, ran[id], o)
		case o == served && ran[id] != 1:
			t.Errorf("POST %s served, but ran %d times", en.path, ran[id])
		case o == refused && ran[id] != 0:
			t.Errorf("POST %s refused, but ran", en.path)
		case o == started:
			failed++
		}
	}
	t.Logf("%d POSTs, %d ran (the app's ledger), %d started and failed", posts, len(ran), failed)
}

func TestChaos(t *testing.T) {
	d := chaosFor(t)
	faultAt := min(d/3, 2*time.Second) // with room after it for every recovery window
	for _, tc := range []struct {
		name   string
		opts   stackOpts
		method string // of the requests to path; if empty, GET
		path   string
		rate   float64
		fresh  bool // a connection per request
		fault  func(t *testing.T, s *stack)
		want   expect
		after  func(t *testing.T, s *stack, entries []entry)
	}{
		{
			// Requests on the killed instance that had started fail (a
			// started request is never replayed); the rest go elsewhere.
			name: "sandbox killed", method: "POST", path: "/work?wait_ms=300", rate: 30, opts: ledgerApp(t),
			fault: func(t *testing.T, s *stack) {
				pg, ok := s.busySandbox()
				if !ok {
					return
				}
				syscall.Kill(-pg, syscall.SIGKILL)
				for deadline := time.Now().Add(5 * time.Second); proctree.Alive(pg); time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Error("the killed sandbox still runs")
						return
					}
				}
			},
			want:  expect{allowed: allow(started), recovered: 3 * time.Second},
			after: ranOnce,
		},
		{
			name: "sandbox stopped for 1.5 s", path: "/work?wait_ms=300", rate: 30,
			fault: func(t *testing.T, s *stack) {
				pg, ok := s.busySandbox()
				if !ok {
					return
				}
				syscall.Kill(-pg, syscall.SIGSTOP)
				time.Sleep(1500 * time.Millisecond) // the fault's length
				syscall.Kill(-pg, syscall.SIGCONT)
			},
			want: expect{allowed: allow(started, refused), recovered: 4 * time.Second},
			after: func(t *testing.T, s *stack, entries []entry) {
				// What the stopped sandbox held waited for it.
				if slowest := slices.MaxFunc(entries, func(a, b entry) int { return cmp.Compare(a.took, b.took) }); slowest.took < time.Second {
					t.Errorf("the slowest request took %v: nothing waited on the stopped sandbox", slowest.took)
				}
			},
		},
		{
			// The bootstrap restarts its app; what the app had started fails.
			name: "app killed", method: "POST", path: "/work?wait_ms=300", rate: 30, opts: ledgerApp(t),
			fault: func(t *testing.T, s *stack) {
				sb, ok := s.busySandbox()
				if !ok {
					return
				}
				pid := appOf(sb)
				if pid == 0 {
					t.Error("no app process in the busy sandbox")
					return
				}
				syscall.Kill(pid, syscall.SIGKILL)
				// The bootstrap starts it again on the sandbox's next
				// request. Its requests failed, so its invocation may end
				// at once and the sandbox wait, frozen, for one: then the
				// app starts when it is next invoked, which the router
				// and emulator, not the test, decide.
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
					if now := appOf(sb); now != 0 && now != pid {
						t.Logf("app %d of sandbox %d killed; %d took its place", pid, sb, now)
						return
					}
					if time.Now().After(deadline) {
						live := s.sandboxes()
						if i := slices.IndexFunc(live, func(in lambdaemu.SandboxInfo) bool { return in.PID == sb }); i >= 0 && live[i].Idle {
							t.Logf("app %d of sandbox %d killed; the sandbox waits between invocations, to start its app at its next", pid, sb)
							return
						}
						t.Errorf("app %d of sandbox %d killed, and none took its place while it was invoked", pid, sb)
						return
					}
				}
			},
			want:  expect{allowed: allow(started, refused), recovered: 3 * time.Second},
			after: ranOnce,
		},
		{
			// In flight when SIGTERM comes: served (the router drains). While
			// it is down: no connection. Started again: served.
			name: "router restarted", path: "/work?wait_ms=300", rate: 30,
			fault: func(t *testing.T, s *stack) { s.restartRouter() },
			want:  expect{allowed: allow(refused, unreached), recovered: 4 * time.Second, servedBefore: true},
		},
		{
			// Two concurrent invocations allowed and one request each: most
			// launches are throttled the whole run. Requests wait for an
			// instance or are refused at the queue timeout; the router backs
			// off rather than hammer the Invoke API.
			name: "throttling storm", path: "/work?wait_ms=250", rate: 12,
			opts: stackOpts{concurrency: 2, routerEnv: map[string]string{"FERRY_ROUTER_MAX_CONCURRENCY": "1", "FERRY_ROUTER_PLAIN": "off"}},
			want: expect{allowed: allow(refused)},
			after: func(t *testing.T, s *stack, _ []entry) {
				st := s.stats()
				t.Logf("emulator: %d invocations, %d throttled", st.Invocations, st.Throttles)
				if st.Throttles == 0 {
					t.Error("no invoke was throttled: the storm did not happen")
				}
				if perSec := float64(st.Throttles) / d.Seconds(); perSec > 100 {
					t.Errorf("%d throttled invokes in %v (%.0f/s): the router hammers a throttled function", st.Throttles, d, perSec)
				}
			},
		},
		{
			// Idle connections hold every client connection the router
			// takes (its descriptors but 64) for 2 s: clients on new
			// connections wait in the listen backlog meanwhile; the router
			// must not fall over, and serves them once the connections are
			// free. (Clients queued for an instance once took every
			// descriptor, so no tunnel could be accepted and no instance
			// came for them until they timed out.)
			name: "router at its descriptor limit", path: "/work?wait_ms=300", rate: 20, opts: stackOpts{nofile: 96}, fresh: true,
			fault: func(t *testing.T, s *stack) {
				var held []net.Conn
				for range 120 {
					c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.ingress, "http://"), time.Second)
					if err != nil {
						break
					}
					held = append(held, c)
				}
				time.Sleep(2 * time.Second) // the fault's length
				for _, c := range held {
					c.Close()
				}
				t.Logf("held %d connections", len(held))
			},
			want: expect{allowed: allow(refused, started), recovered: 4 * time.Second},
			after: func(t *testing.T, s *stack, _ []entry) {
				if !proctree.Alive(s.router.Process.Pid) {
					t.Errorf("the router exited")
				}
				if !strings.Contains(s.routerLog.String(), `"client_conns":32`) || !strings.Contains(s.routerLog.String(), "client connections at their limit") {
					t.Errorf("the router did not hold clients to 32 of its 96 descriptors, or never reached that limit:\n%s", tail(s.routerLog.String(), 2000))
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startStack(t, tc.opts)
			var fault func()
			if tc.fault != nil {
				fault = func() { tc.fault(t, s) }
			}
			method := cmp.Or(tc.method, "GET")
			entries := ledger(t, s.ingress, method, tc.path, tc.rate, d, tc.fresh, fault, faultAt)
			account(t, entries, faultAt, tc.want)
			if tc.after != nil {
				tc.after(t, s, entries)
			}
		})
	}
}

// TestChaosLocalAWSRestarted: the local AWS (moto, where the router
// publishes its metrics) is stopped and started again while the router
// serves. Serving goes on untouched, and what could not be published
// while it was down reaches it once it is back.
func TestChaosLocalAWSRestarted(t *testing.T) {
	d := chaosFor(t)
	faultAt := d / 3
	aws0 := &localAWS{addr: freeAddr(t)}
	if err := aws0.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(aws0.stop)
	endpoint := "http://" + aws0.addr
	s := startStack(t, stackOpts{routerEnv: map[string]string{
		"FERRY_ROUTER_METRICS": "emf,cloudwatch", "AWS_ENDPOINT_URL": endpoint, "AWS_DISABLE_REQUEST_COMPRESSION": "true",
	}})
	var downAt, upAt time.Time
	entries := ledger(t, s.ingress, "GET", "/work?wait_ms=200", 20, d, false, func() {
		aws0.stop()
		downAt = time.Now()
		time.Sleep(2 * time.Second) // the outage's length
		if err := aws0.start(); err != nil {
			t.Error(err)
		}
		upAt = time.Now()
	}, faultAt)
	account(t, entries, faultAt, expect{allowed: allow(), recovered: time.Nanosecond})

	// The router logged what it kept, and the new local AWS (empty when
	// it started) holds at least the requests of every interval that
	// ended while it was down or since.
	if !strings.Contains(s.routerLog.String(), "kept to send with the next interval") {
		t.Errorf("the router never kept metrics it could not publish:\n%s", tail(s.routerLog.String(), 2000))
	}
	cw := cloudwatch.New(cloudwatch.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), DisableRequestCompression: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		})})
	// The router flushes every second; the EMF lines say what each
	// interval held.
	want := 0.0
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		want = s.emfSumSince("Requests", downAt.Add(time.Second))
		out, err := cw.GetMetricData(t.Context(), &cloudwatch.GetMetricDataInput{
			StartTime: aws.Time(downAt.Add(-time.Hour)), EndTime: aws.Time(time.Now().Add(time.Hour)),
			MetricDataQueries: []cwtypes.MetricDataQuery{{Id: aws.String("r"), MetricStat: &cwtypes.MetricStat{
				Metric: &cwtypes.Metric{Namespace: aws.String("Ferry"), MetricName: aws.String("Requests"),
					Dimensions: []cwtypes.Dimension{{Name: aws.String("Function"), Value: aws.String("app")}}},
				Period: aws.Int32(60), Stat: aws.String("Sum")}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		got := 0.0
		for _, r := range out.MetricDataResults {
			for _, v := range r.Values {
				got += v
			}
		}
		if got >= want && want > 0 {
			t.Logf("the restarted local AWS holds %.0f requests; intervals since the outage began held %.0f (down %v)", got, want, upAt.Sub(downAt).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted local AWS holds %.0f requests; the intervals since the outage began held %.0f", got, want)
		}
	}
}
