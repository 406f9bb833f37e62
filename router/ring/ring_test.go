package ring

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestRankKeepsOrderWhenAMemberGoes(t *testing.T) {
	members := []string{"10.0.0.1:8444", "10.0.0.2:8444", "10.0.0.3:8444", "10.0.0.4:8444"}
	for i := range 200 {
		key := fmt.Sprintf("fn-%d", i)
		full := Rank(key, members)
		if len(full) != len(members) {
			t.Fatalf("Rank(%s) = %v", key, full)
		}
		for _, gone := range members {
			rest := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == gone })
			want := slices.DeleteFunc(slices.Clone(full), func(m string) bool { return m == gone })
			if got := Rank(key, rest); !slices.Equal(got, want) {
				t.Fatalf("Rank(%s) without %s = %v, want %v (the order of the others must not change)", key, gone, got, want)
			}
		}
		// The input order does not matter: every replica agrees.
		if got := Rank(key, []string{members[3], members[1], members[0], members[2]}); !slices.Equal(got, full) {
			t.Fatalf("Rank(%s) depends on the input order: %v vs %v", key, got, full)
		}
	}
}

func TestRankSpreadsFunctions(t *testing.T) {
	members := []string{"10.0.1.7:8444", "10.0.2.9:8444", "10.0.3.11:8444"}
	owned := map[string]int{}
	const n = 3000
	for i := range n {
		owned[Rank(fmt.Sprintf("function-%d", i), members)[0]]++
	}
	for _, m := range members {
		if share := float64(owned[m]) / n; share < 0.28 || share > 0.39 {
			t.Errorf("%s owns %.0f%% of %d functions, want about a third: %v", m, 100*share, n, owned)
		}
	}
}

// fakeProbes answers probes from a table the test sets: a fake, since the
// test decides each member's health probe by probe.
type fakeProbes struct {
	mu     sync.Mutex
	health map[string]Health
}

func (f *fakeProbes) set(addr string, h Health) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.health[addr] = h
}

func (f *fakeProbes) probe(ctx context.Context, addr string) Health {
	if ctx.Err() != nil {
		return Down // as a real probe out of time
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if h, ok := f.health[addr]; ok {
		return h
	}
	return Down
}

func TestMembership(t *testing.T) {
	const self, b, c = "10.0.0.1:8444", "10.0.0.2:8444", "10.0.0.3:8444"
	probes := &fakeProbes{health: map[string]Health{b: Up, c: Up}}
	var changes [][]string
	r, err := New(Config{Self: self, Source: Static{self, b, c}, Probe: probes.probe, FailAfter: 2,
		OnChange: func(live []string) { changes = append(changes, live) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got := r.Live(); !slices.Equal(got, []string{self}) {
		t.Fatalf("before any probe, live = %v, want only this replica", got)
	}
	steps := []struct {
		what string
		do   func()
		want []string
	}{
		{"both peers answer", func() {}, []string{self, b, c}},
		{"c misses one probe: still in (FailAfter 2)", func() { probes.set(c, Down) }, []string{self, b, c}},
		{"c misses a second: out", func() {}, []string{self, b}},
		{"c answers again: back", func() { probes.set(c, Up) }, []string{self, b, c}},
		{"b says it is leaving: out at once", func() { probes.set(b, Leaving) }, []string{self, c}},
		{"b is back", func() { probes.set(b, Up) }, []string{self, b, c}},
		{"a request could not reach c: out at once", func() {
			r.Down(c)
			if got := r.Live(); !slices.Equal(got, []string{self, b}) {
				t.Fatalf("after Down(c): live = %v, want [%s %s]", got, self, b)
			}
		}, []string{self, b, c}}, // and back at its next answer
		{"this replica leaves", func() { r.Leave() }, []string{b, c}},
	}
	for _, s := range steps {
		s.do()
		r.Refresh(ctx)
		if got := r.Live(); !slices.Equal(got, s.want) {
			t.Fatalf("%s: live = %v, want %v", s.what, got, s.want)
		}
	}
	if r.PeersFailing() {
		t.Fatal("PeersFailing with every peer fine")
	}
	probes.set(b, UpFailing)
	r.Refresh(ctx)
	if got := r.Live(); !slices.Equal(got, []string{b, c}) || !r.PeersFailing() {
		t.Fatalf("a peer whose Lambda calls fail: live = %v (want it still in), PeersFailing %v (want true)", got, r.PeersFailing())
	}
	probes.set(b, Up)
	r.Refresh(ctx)
	if r.PeersFailing() {
		t.Fatal("PeersFailing after the peer said it is fine again")
	}
	r.Down(c)
	if got := r.Live(); !slices.Equal(got, []string{b}) {
		t.Fatalf("after Down(c): live = %v, want [%s] (no probe in between)", got, b)
	}
	if len(changes) < 6 {
		t.Errorf("OnChange saw %d changes, want one per change: %v", len(changes), changes)
	}
}

// failingSource is a discovery outage: a fake, since the tests cannot
// make a real Cloud Map fail.
type failingSource struct{}

func (failingSource) Members(context.Context) ([]string, error) { return nil, fmt.Errorf("throttled") }

func TestDiscoveryOutageKeepsMembers(t *testing.T) {
	const self, b = "10.0.0.1:8444", "10.0.0.2:8444"
	probes := &fakeProbes{health: map[string]Health{b: Up}}
	src := &switchSource{s: Static{self, b}}
	r, _ := New(Config{Self: self, Source: src, Probe: probes.probe})
	r.Refresh(context.Background())
	src.s = failingSource{}
	r.Refresh(context.Background())
	if got := r.Live(); !slices.Equal(got, []string{self, b}) {
		t.Fatalf("after a failed listing, live = %v, want the members known", got)
	}
}

type switchSource struct{ s Source }

func (w *switchSource) Members(ctx context.Context) ([]string, error) { return w.s.Members(ctx) }

func TestPlan(t *testing.T) {
	members := []string{"10.0.0.1:8444", "10.0.0.2:8444", "10.0.0.3:8444"}
	const fn = "orders"
	order := Rank(fn, members)
	owner, second, third := order[0], order[1], order[2]
	ring := func(self string, concurrency int) *Ring {
		probes := &fakeProbes{health: map[string]Health{}}
		for _, m := range members {
			probes.set(m, Up)
		}
		r, err := New(Config{Self: self, Source: Static(members), Probe: probes.probe, OwnerConcurrency: concurrency})
		if err != nil {
			t.Fatal(err)
		}
		r.Refresh(context.Background())
		return r
	}
	t.Run("the owner serves here", func(t *testing.T) {
		if got := ring(owner, 256).Plan(fn); !slices.Equal(got, []string{""}) {
			t.Fatalf("Plan = %v, want [\"\"]", got)
		}
	})
	t.Run("others forward to the owner, then the next, then serve here", func(t *testing.T) {
		if got := ring(third, 256).Plan(fn); !slices.Equal(got, []string{owner, second, ""}) {
			t.Fatalf("Plan = %v, want [%s %s \"\"]", got, owner, second)
		}
		if got := ring(second, 256).Plan(fn); !slices.Equal(got, []string{owner, third, ""}) {
			t.Fatalf("Plan = %v, want [%s %s \"\"]", got, owner, third)
		}
	})
	t.Run("load adds owners", func(t *testing.T) {
		r := ring(second, 4)
		// 2 in flight here stand for 6 over three replicas: two owners
		// of 4 each, and this replica is the second.
		end1, end2 := r.Begin(fn), r.Begin(fn)
		defer end1()
		defer end2()
		if got := r.Plan(fn); !slices.Equal(got, []string{""}) {
			t.Fatalf("Plan under load = %v, want [\"\"] (this replica is among the 2 owners)", got)
		}
		r3 := ring(third, 4)
		e1, e2 := r3.Begin(fn), r3.Begin(fn)
		defer e1()
		defer e2()
		// The third is not an owner: it sends to the owner it has sent
		// the fewest to.
		busy := r3.Sending(owner)
		if got := r3.Plan(fn); got[0] != second {
			t.Fatalf("Plan = %v, want %s first (the owner with fewer of this replica's requests)", got, second)
		}
		busy()
		if got := r3.Plan(fn); got[0] != owner {
			t.Fatalf("Plan = %v, want %s first once the counts are even", got, owner)
		}
	})
	t.Run("a replica leaving forwards everything", func(t *testing.T) {
		r := ring(owner, 256)
		r.Leave()
		if got := r.Plan(fn); !slices.Equal(got, []string{second, third, ""}) {
			t.Fatalf("Plan = %v, want [%s %s \"\"]", got, second, third)
		}
	})
	t.Run("alone, everything is served here", func(t *testing.T) {
		r, _ := New(Config{Self: owner, Source: Static{}, Probe: (&fakeProbes{health: map[string]Health{}}).probe})
		if got := r.Plan(fn); !slices.Equal(got, []string{""}) {
			t.Fatalf("Plan = %v", got)
		}
	})
}

// TestTransport probes a real HTTP/2 server without TLS, as replicas do.
func TestTransport(t *testing.T) {
	key := Key([]byte("a secret of at least thirty-two characters"))
	if other := Key([]byte("another secret of thirty-two characters")); other == key {
		t.Fatal("keys of different secrets are equal")
	}
	var mu sync.Mutex
	leaving, failing := false, false
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &h2c, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Authentic(r, key) {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Header.Get(HeaderProbe) != "" && leaving:
			http.Error(w, "leaving", http.StatusServiceUnavailable)
		case r.Header.Get(HeaderProbe) != "" && failing:
			io.WriteString(w, ProbeFailing+"\n")
		case r.Header.Get(HeaderProbe) != "":
			io.WriteString(w, "ok")
		default:
			io.WriteString(w, r.Host+" "+r.URL.Path+" "+r.Proto)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	ctx := context.Background()

	tr := NewTransport(key)
	defer tr.Close()
	if h := tr.Probe(ctx, addr); h != Up {
		t.Fatalf("probe = %v, want Up", h)
	}
	req, _ := http.NewRequest("GET", "http://instance/orders/7", nil)
	req.Host = "shop.example"
	resp, err := tr.RoundTrip(addr, req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "shop.example /orders/7 HTTP/2.0" {
		t.Fatalf("forwarded request arrived as %q", b)
	}
	mu.Lock()
	failing = true
	mu.Unlock()
	if h := tr.Probe(ctx, addr); h != UpFailing {
		t.Fatalf("probe of a peer whose Lambda calls fail = %v, want UpFailing", h)
	}
	mu.Lock()
	leaving = true
	mu.Unlock()
	if h := tr.Probe(ctx, addr); h != Leaving {
		t.Fatalf("probe of a leaving peer = %v, want Leaving", h)
	}
	if h := NewTransport("wrong").Probe(ctx, addr); h != Down {
		t.Fatalf("probe with a wrong key = %v, want Down", h)
	}
	srv.Close()
	req, _ = http.NewRequest("GET", "http://instance/", nil)
	_, err = NewTransport(key).RoundTrip(addr, req)
	if !Unreached(err) {
		t.Fatalf("a closed peer: err %v, want one Unreached reports", err)
	}
}

// hangingSource is a discovery call that never answers in time: a fake,
// since the local AWS cannot be made to hang.
type hangingSource struct{}

func (hangingSource) Members(ctx context.Context) ([]string, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestSlowDiscoveryKeepsMembers(t *testing.T) {
	const self, b = "10.0.0.1:8444", "10.0.0.2:8444"
	probes := &fakeProbes{health: map[string]Health{b: Up}}
	src := &switchSource{s: Static{self, b}}
	r, _ := New(Config{Self: self, Source: src, Probe: probes.probe, Every: 20 * time.Millisecond})
	r.Refresh(context.Background())
	src.s = hangingSource{}
	for range 5 {
		r.Refresh(context.Background())
	}
	if got := r.Live(); !slices.Equal(got, []string{self, b}) {
		t.Fatalf("after listings that timed out, live = %v, want the members known (their probes still answer)", got)
	}
}
