package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrun/ferry/router/pool"
)

func TestWarmPath(t *testing.T) {
	// The tunnel's reuse, not admission: each of these 5 ms requests
	// costs about 1 ms of the sandbox's 0.58 vCPU, so sharing would slow
	// them past the CPU budget and admission would rightly spread them.
	s := startStack(t, stackOpts{fnEnv: map[string]string{"FERRY_CPU_ADMISSION": "off", "FERRY_IDLE_LINGER": "1s"}})
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Go(func() {
			for i := range 40 {
				r := s.get(fmt.Sprintf("/work?wait_ms=5&w=%d&i=%d", w, i))
				if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"wait_ms":5`) {
					t.Errorf("request: %d %q %v", r.status, r.body, r.err)
				}
				noFerryHeaders(t, r.header)
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// The function's own linger, not the router's ask, as its hello
	// said: the router keeps last tries off an instance near its end.
	if p := s.pool(); len(p.Instances) != 1 || p.Instances[0].LingerUs != time.Second.Microseconds() {
		t.Errorf("pool %+v; want one instance saying it lingers 1s", p.Instances)
	}
	s.quiesce()
	st := s.stats()
	if statuses[200] != 200 {
		t.Errorf("statuses %v, want 200 x 200", statuses)
	}
	if st.Invocations != 1 || st.SandboxesStarted != 1 {
		t.Errorf("emulator %+v; want the 200 requests in one invocation", st)
	}
}

func TestBurstIntoColdFunction(t *testing.T) {
	// Launch accounting against a fixed limit: with CPU admission off,
	// each instance takes its 10. (With it on, an instance that says it
	// is full makes the router launch more, by design.)
	s := startStack(t, stackOpts{
		routerEnv: map[string]string{"FERRY_ROUTER_MAX_CONCURRENCY": "10"},
		fnEnv:     map[string]string{"FERRY_CPU_ADMISSION": "off"},
	})
	statuses := s.concurrently(200, "/work?wait_ms=300")
	s.quiesce()
	st := s.stats()
	t.Logf("200 concurrent requests, limit 10: %d invocations, statuses %v", st.Invocations, statuses)
	if statuses[200] != 200 {
		t.Errorf("statuses %v, want all 200", statuses)
	}
	if st.Invocations > 22 {
		t.Errorf("%d invocations, want at most 22 (ceil(200/10) = 20)", st.Invocations)
	}
}

// TestTurnoverUnderContinuousLoad: instances reach their 5 s deadline and
// are replaced under load with no request failing; 12 s of load in make
// test, 30 s under make chaos.
func TestTurnoverUnderContinuousLoad(t *testing.T) {
	d := 12 * time.Second
	if os.Getenv("FERRY_CHAOS_FOR") != "" {
		d = 30 * time.Second
	}
	s := startStack(t, stackOpts{timeout: 5 * time.Second})
	stop := make(chan struct{})
	results, wait := s.load(8, "/work?wait_ms=50", stop)
	time.Sleep(d) // the load's length
	close(stop)
	wait()
	ok, failed := 0, map[string]int{}
	for r := range results {
		if r.err == nil && r.status == 200 {
			ok++
		} else {
			failed[fmt.Sprintf("%d %v %.80s", r.status, r.err, r.body)]++
		}
	}
	s.quiesce()
	st := s.stats()
	t.Logf("%d requests succeeded over %d invocations in %v (5 s timeout)", ok, st.Invocations, d)
	if len(failed) > 0 {
		t.Errorf("failed requests: %v", failed)
	}
	if want := int64(d / (5 * time.Second)); st.Invocations < want {
		t.Errorf("only %d invocations in %v with a 5 s timeout, want %d or more: instances did not turn over", st.Invocations, d, want)
	}
	// 8 clients kept streams in flight the whole time.
	if v := s.awaitEMF("InFlightPerInstance"); v <= 0 {
		t.Errorf("InFlightPerInstance summed %v over the run, want streams in flight", v)
	}
}

// Sparse traffic: each request finds no instance, and any linger would be
// paid in full before a new invocation all the same. The pool learns the
// gaps and the invocations' overhead from what they report, and asks new
// instances to end as soon as they are idle.
func TestSparseTrafficLingersNot(t *testing.T) {
	// Tunnels only: with plain invocations, such requests soon go plain
	// (TestPlainInvocationsWhereNothingShares).
	s := startStack(t, stackOpts{routerEnv: map[string]string{"FERRY_ROUTER_PLAIN": "off"}})
	const n = 12
	for i := range n {
		if r := s.get("/work?wait_ms=5"); r.status != 200 {
			t.Fatalf("request %d: %d %s %v", i, r.status, r.body, r.err)
		}
		s.quiesce() // the instance has ended: the next request is on its own
		// A gap past the linger's ceiling (100 ms): no linger catches it,
		// whatever the invocations' overhead on a loaded machine.
		time.Sleep(150 * time.Millisecond)
	}
	p := s.pool()
	t.Logf("pool after %d sparse requests: linger %d us, overhead %d us, %d gaps", n, p.LingerUs, p.OverheadUs, p.LingerGaps)
	if p.LingerGaps < n/2 || p.OverheadUs <= 0 {
		t.Fatalf("pool learnt %d gaps and an overhead of %d us from %d sparse requests: %+v", p.LingerGaps, p.OverheadUs, n, p)
	}
	if p.LingerUs != 0 {
		t.Errorf("pool asks new instances to linger %d us with gaps of over 150 ms and an overhead of %d us; want 0", p.LingerUs, p.OverheadUs)
	}
	if st := s.stats(); st.Invocations != n {
		t.Errorf("%d invocations for %d requests, each alone", st.Invocations, n)
	}
}

// Where tunnel invocations each take only the request they were started
// for (requests one at a time, the instance gone between them), requests
// go as plain invocations: one invoke each, the request in its payload,
// reaching the app and the client as they would through a tunnel. A
// response too large for an invoke result fails clearly, and sends the
// function's requests back to tunnels.
func TestPlainInvocationsWhereNothingShares(t *testing.T) {
	s := startStack(t, stackOpts{})
	for i := 0; !s.pool().PlainMode; i++ {
		if i == 12 {
			t.Fatalf("still on tunnels after %d lone requests: %+v", i, s.pool())
		}
		if r := s.get("/work?wait_ms=5"); r.status != 200 {
			t.Fatalf("request %d: %d %s %v", i, r.status, r.body, r.err)
		}
		s.quiesce()
	}
	plainBefore, invBefore := s.pool().Stats.Plain, s.stats().Invocations

	bin := []byte(strings.Repeat("h\u00e9llo\x00\x01\u4e16 ", 30)) // the echo is JSON: valid UTF-8
	r := s.do("POST", "/echo?x=1&y=a%2Fb", bytes.NewReader(bin), http.Header{"X-Test": {"a"}, "Cookie": {"c1=1; c2=2"}})
	var echo struct {
		Method, Path, Query, Host, Body string
		BodyBytes                       int `json:"body_bytes"`
		Headers                         map[string][]string
		Cookies                         map[string]string
	}
	if r.status != 200 || json.Unmarshal([]byte(r.body), &echo) != nil {
		t.Fatalf("POST /echo: %d %q %v", r.status, r.body, r.err)
	}
	if echo.Method != "POST" || echo.Path != "/echo" || echo.Query != "x=1&y=a%2Fb" || echo.Body != string(bin) ||
		echo.BodyBytes != len(bin) || echo.Cookies["c1"] != "1" || echo.Cookies["c2"] != "2" ||
		len(echo.Headers["X-Test"]) != 1 || echo.Headers["X-Test"][0] != "a" || !strings.HasPrefix(echo.Host, "127.0.0.1") ||
		len(echo.Headers["X-Forwarded-For"]) != 1 || echo.Headers["X-Forwarded-For"][0] != "127.0.0.1" {
		t.Errorf("app saw %+v", echo)
	}
	r = s.get("/echo?status=201&cookie=s%3D1&cookie=t%3D2&header=X-Multi:v")
	if r.status != 201 || r.header.Get("X-Multi") != "v" || r.header.Get("X-Echo") != "yes" ||
		!slices.Equal(r.header.Values("Set-Cookie"), []string{"s=1", "t=2"}) {
		t.Errorf("GET /echo: %d %v", r.status, r.header)
	}
	noFerryHeaders(t, r.header)
	r = s.get("/binary?bytes=1000")
	if r.status != 200 || len(r.body) != 1000 || r.body[255] != 255 || r.body[256] != 0 {
		t.Errorf("GET /binary: %d, %d bytes", r.status, len(r.body))
	}
	if r := s.get("/work?cpu_ms=40"); r.status != 200 {
		t.Errorf("GET /work?cpu_ms=40: %d %s %v", r.status, r.body, r.err)
	}
	if n := s.pool().Stats.Plain - plainBefore; n != 4 {
		t.Errorf("%d of 4 requests went plain", n)
	}
	if n := s.stats().Invocations - invBefore; n != 4 {
		t.Errorf("%d invocations for 4 plain requests", n)
	}
	// The CPU plain invocations used reaches the router's metrics from
	// their log tails: it agrees with what the emulator read from the
	// sandboxes' cgroups, the 40 ms burn included.
	s.quiesce()
	want := s.stats()
	for deadline := time.Now().Add(5 * time.Second); s.emfSum("Invocations") < float64(want.Invocations) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	// The emulator's reading also holds the runtime's calls around each
	// invocation, which the bootstrap's cannot: a couple of ms under -race.
	cpuMs, emuMs := s.emfSum("ActiveCpuMs"), float64(want.CPUUs)/1000
	t.Logf("ActiveCpuMs %.1f over %d invocations; the emulator read %.1f ms", cpuMs, want.Invocations, emuMs)
	if cpuMs < 40 || (emuMs > 0 && math.Abs(cpuMs-emuMs) > 0.1*emuMs+2*float64(want.Invocations)) {
		t.Errorf("ActiveCpuMs %.1f; the emulator read %.1f ms from the sandboxes' cgroups, and the app burned 40 ms in one request", cpuMs, emuMs)
	}

	// A body too large to keep for a retry goes through a tunnel.
	big := strings.Repeat("b", 100<<10)
	if r := s.do("POST", "/echo", strings.NewReader(big), nil); r.status != 200 || !strings.Contains(r.body, `"body_bytes":102400`) {
		t.Errorf("POST of 100 KiB: %d %.200s", r.status, r.body)
	}
	if n := s.pool().Stats.Plain - plainBefore; n != 4 {
		t.Errorf("a 100 KiB body went plain")
	}
	s.quiesce()

	r = s.get(fmt.Sprintf("/binary?bytes=%d", 7<<20))
	if r.status != 502 || !strings.Contains(r.body, "Ferry.ResponseTooLarge") {
		t.Errorf("7 MiB answer through a plain invocation: %d %.300s", r.status, r.body)
	}
	if p := s.pool(); p.PlainMode {
		t.Errorf("still plain after a response too large for it: %+v", p)
	}
	r = s.get(fmt.Sprintf("/binary?bytes=%d", 7<<20))
	if r.status != 200 || len(r.body) != 7<<20 {
		t.Errorf("7 MiB answer after: %d, %d bytes", r.status, len(r.body))
	}
}

// An instance says when it has room again, between answers: at 512 MB
// (0.29 vCPU) an API request (10 ms of CPU, then 100 ms waiting) leaves no
// room for another while it computes, and room for one once it waits.
// The instance's load stream tells the router so while the request is
// still in flight (without it, the router learns nothing until the
// answer). Whether a request then joins is the pool's room rule; timing
// it here would measure the machine.
func TestInstanceSaysWhenItHasRoom(t *testing.T) {
	// One vCPU: at 512 MB's 0.29, -race's cost of the tunnel and the
	// proxy on this machine sometimes left no room beside one request
	// (about one run in ten, with or without carried requests).
	s := startStack(t, stackOpts{memoryMB: 1769, fnEnv: map[string]string{"FERRY_LOAD_STREAM": "on"},
		routerEnv: map[string]string{"FERRY_ROUTER_PLAIN": "off"}})
	const api = "/work?cpu_ms=10&wait_ms=100"
	for i := range 6 { // the sandbox learns what the request costs (past its first, slower ones)
		if r := s.get(api); r.status != 200 {
			t.Fatalf("request %d: %d %s %v", i, r.status, r.body, r.err)
		}
		s.quiesce()
	}
	// A busy machine can stretch a request's CPU past its window of
	// room: a few tries, each a request alone and a look for its room.
	var seen []pool.InstanceState
	found := false
	for try := 0; try < 5 && !found; try++ {
		s.quiesce()
		first := make(chan reply, 1)
		go func() { first <- s.get(api) }()
	look:
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			p := s.pool()
			if len(p.Instances) == 1 && p.Instances[0].InFlight == 1 && p.Instances[0].Room >= 1 {
				found = true
				break
			}
			if len(p.Instances) == 1 {
				seen = append(seen[max(len(seen)-2, 0):], p.Instances[0]) // the last few
			}
			select {
			case r := <-first:
				first <- r
				break look
			default:
			}
		}
		if r := <-first; r.status != 200 {
			t.Fatalf("first request: %d %s", r.status, r.body)
		}
	}
	if !found {
		t.Fatalf("in 5 tries, no instance said it had room beside a request waiting; last seen %+v", seen)
	}
}

// TestColdBurstOfCPUBoundRequestsSpreads: a burst of CPU-bound requests
// into a function no sandbox has learnt is not run all at once on the
// first instance's one vCPU (each would take the burst's time, not its
// own): a sandbox takes a second request of a kind it has not learnt only
// once the first has shown it is not computing. No two of the burst ran
// at once in one app process.
func TestColdBurstOfCPUBoundRequestsSpreads(t *testing.T) {
	// The watch over a kind not yet learnt judges by the CPU the first
	// request gets: a request this machine's other work starved of its
	// core while it was watched passes for one that waits. Lambda gives
	// each sandbox its own vCPU; here, a burst that failed while its
	// sandbox waited for a core (the emulator's contended time) is run
	// once more, on a fresh stack.
	for try := 1; ; try++ {
		contended, ok := coldBurst(t, try < 2)
		if ok {
			return
		}
		if try >= 2 || !contended {
			t.Fatal("a cold burst of CPU-bound requests shared one sandbox")
		}
		t.Log("the burst's sandbox waited for a core while it was watched: once more, on a fresh stack")
	}
}

// coldBurst sends a burst of CPU-bound requests to a fresh stack and
// reports whether it spread (ok), and whether its sandboxes waited for a
// core for a tenth of the CPU they used or more. With lenient, a burst
// that did not spread is logged, not failed.
func coldBurst(t *testing.T, lenient bool) (contended, ok bool) {
	s := startStack(t, stackOpts{memoryMB: 1769, routerEnv: map[string]string{"FERRY_ROUTER_PLAIN": "off"}})
	const n = 6
	type ran struct {
		PID              int
		StartNs, EndedNs int64
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		runs []ran
	)
	for range n {
		wg.Go(func() {
			r := s.get("/work?cpu_ms=60")
			var out struct {
				PID     int   `json:"pid"`
				Started int64 `json:"started_ns"`
				Ended   int64 `json:"ended_ns"`
			}
			if r.status != 200 || json.Unmarshal([]byte(r.body), &out) != nil {
				t.Errorf("GET /work?cpu_ms=60: %d %q %v", r.status, r.body, r.err)
				return
			}
			mu.Lock()
			runs = append(runs, ran{PID: out.PID, StartNs: out.Started, EndedNs: out.Ended})
			mu.Unlock()
		})
	}
	wg.Wait()
	// A request starved by this machine's other work at the moment it is
	// watched may pass for waiting, and let one more beside it: a pair,
	// not the burst (all 15 pairs overlapped before the watch).
	overlapping, pids := 0, map[int]bool{}
	for i, a := range runs {
		pids[a.PID] = true
		for _, b := range runs[i+1:] {
			if overlap := time.Duration(min(a.EndedNs, b.EndedNs) - max(a.StartNs, b.StartNs)); a.PID == b.PID && overlap > 0 {
				overlapping++
				t.Logf("two of the burst ran at once for %v in one app process (pid %d)", overlap, a.PID)
			}
		}
	}
	ok = overlapping <= 2 && len(pids) >= 2
	// The invocations end once idle; their totals say how long their
	// sandboxes waited for a core.
	st := s.stats()
	for deadline := time.Now().Add(5 * time.Second); st.Running > 0 && time.Now().Before(deadline); st = s.stats() {
		time.Sleep(20 * time.Millisecond) // polls the emulator, which has no event for it
	}
	contended = st.CPUUs > 0 && st.ContendedUs*10 >= st.CPUUs
	t.Logf("%d requests over %d invocations (contended %v of %v CPU); router pool %+v", len(runs), st.Invocations,
		time.Duration(st.ContendedUs)*time.Microsecond, time.Duration(st.CPUUs)*time.Microsecond, s.pool().Stats)
	if !ok {
		msg := fmt.Sprintf("%d pairs of the burst ran at once in one app process, over %d processes; want at most 2, over several", overlapping, len(pids))
		if lenient && contended {
			t.Log(msg)
		} else {
			t.Error(msg)
		}
	}
	return contended, ok
}

// TestFirstRequestRidesItsInvocation: the request a fresh function's
// invocation is launched for rides in its event, and the app gets it whole
// (method, path, query, headers, cookies, body); its response, status,
// headers and trailers included, comes back through the claim, with none
// of the protocol's headers.
func TestFirstRequestRidesItsInvocation(t *testing.T) {
	s := startStack(t, ledgerApp(t))
	if r := s.do("POST", "/work?id=first&wait_ms=30", nil, nil); r.err != nil || r.status != 200 {
		t.Fatalf("first request: %d %q %v", r.status, r.body, r.err)
	}
	if p := s.pool(); p.Stats.Carried != 1 || p.Stats.Launches != 1 {
		t.Errorf("pool stats %+v; want the one launch to have carried the request", p.Stats)
	}
	if b, err := os.ReadFile(s.fnEnv["GOAPP_LEDGER"]); err != nil || string(b) != "first\n" {
		t.Errorf("the app's ledger %q, %v; want the request run once", b, err)
	}

	hdr := http.Header{"X-Test": {"carried"}, "Cookie": {"a=1; b=2"}}
	r := s.do("POST", "/echo?status=201&header=X-Back:yes&trailer=done", strings.NewReader("the body"), hdr)
	if r.err != nil || r.status != 201 {
		t.Fatalf("got %d %q %v", r.status, r.body, r.err)
	}
	var got struct {
		Method, Path, Query, Body string
		Headers                   http.Header
		Cookies                   map[string]string
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if got.Method != "POST" || got.Path != "/echo" || !strings.Contains(got.Query, "trailer=done") || got.Body != "the body" ||
		got.Headers.Get("X-Test") != "carried" || got.Cookies["a"] != "1" || got.Cookies["b"] != "2" {
		t.Errorf("the app got %+v; want the request whole", got)
	}
	if r.header.Get("X-Back") != "yes" || r.header.Get("X-Echo") != "yes" {
		t.Errorf("response headers %v; want the app's", r.header)
	}
	if r.trailer.Get("X-Echo-Trailer") != "done" {
		t.Errorf("trailers %v; want the app's", r.trailer)
	}
	noFerryHeaders(t, r.header)
	// The first instance ended on idle (a linger of 2 ms at most) long
	// before: the echo had an invocation of its own.
	if p := s.pool(); p.Stats.Carried != 2 {
		t.Errorf("pool stats %+v; want the echo carried too", p.Stats)
	}
}
