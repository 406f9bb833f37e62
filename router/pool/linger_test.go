package pool

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestLingerModel(t *testing.T) {
	const ms = time.Millisecond
	poisson := func(perSecond float64) []time.Duration {
		r := rand.New(rand.NewPCG(1, 2))
		gaps := make([]time.Duration, 64)
		for i := range gaps {
			gaps[i] = time.Duration(r.ExpFloat64() / perSecond * float64(time.Second))
		}
		return gaps
	}
	repeat := func(g time.Duration, n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = g
		}
		return out
	}
	cases := map[string]struct {
		max      time.Duration
		gaps     []time.Duration // each: an instance goes idle, a request comes this much later
		overhead time.Duration   // of each invocation, beyond busy and linger
		want     time.Duration
		atLeast  bool // want is a floor: the exact gap depends on the draw
	}{
		"nothing learnt: the start":            {100 * ms, nil, 3 * ms, startLinger, false},
		"too few gaps: the start":              {100 * ms, repeat(time.Second, minLingerSamples-1), 3 * ms, startLinger, false},
		"overhead unknown: the start":          {100 * ms, repeat(time.Second, 20), 0, startLinger, false},
		"nothing learnt, ceiling below start":  {ms, nil, 3 * ms, ms, false},
		"sparse traffic: end at once":          {2 * ms, repeat(300*ms, 20), 3 * ms, 0, false},
		"Poisson 8/s: end at once":             {2 * ms, poisson(8), 3 * ms, 0, false},
		"Poisson 40/s: end at once":            {2 * ms, poisson(40), 3 * ms, 0, false},
		"next request 0.4 ms after the answer": {2 * ms, repeat(400*time.Microsecond, 20), 3 * ms, 500 * time.Microsecond, false},
		"gaps past the most are not waited":    {2 * ms, repeat(2500*time.Microsecond, 20), 3 * ms, 0, false},
		"waiting dearer than the overhead": {2 * ms, append(repeat(1500*time.Microsecond, 10), repeat(time.Second, 30)...),
			1 * ms, 0, false},
		"mostly quick follow-ups": {2 * ms, append(repeat(800*time.Microsecond, 30), repeat(time.Second, 10)...),
			3 * ms, time.Millisecond, false},
		// One request an instance, 100/s, each new invocation's tunnel
		// 20 ms: the instance that went idle should wait for the next.
		"Poisson 100/s, dear invocations: stay": {100 * ms, poisson(100), 20 * ms, 20 * ms, true},
		"Poisson 100/s, cheap invocations: end": {100 * ms, poisson(100), time.Millisecond, 0, false},
		"sparse traffic under a high ceiling":   {100 * ms, repeat(300*ms, 20), 20 * ms, 0, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m := newLingerModel(tc.max)
			now := time.Unix(1000, 0)
			for _, g := range tc.gaps {
				m.wentIdle(now)
				now = now.Add(g)
				m.arrived(now)
				now = now.Add(10 * ms) // busy
			}
			if tc.overhead > 0 {
				m.ended(tc.overhead+50*ms+tc.max, 50*ms, tc.max, true)
			}
			if got := m.choose(); got != tc.want && !(tc.atLeast && got > tc.want && got <= tc.max) {
				t.Errorf("choose() = %v, want %v (gaps %d, overhead %v)", got, tc.want, m.nGaps, m.overhead)
			}
		})
	}
}

func TestLingerModelBookkeeping(t *testing.T) {
	const ms = time.Millisecond
	now := time.Unix(1000, 0)
	m := newLingerModel(2 * ms)

	// Three instances go idle; one request meets the latest of them.
	for range 3 {
		m.wentIdle(now)
		now = now.Add(ms)
	}
	m.arrived(now)
	if m.nGaps != 1 || m.gaps[0] != ms || len(m.idle) != 2 {
		t.Fatalf("after one arrival: %d gaps %v, %d idle; want the gap 1ms and 2 idle left", m.nGaps, m.gaps[:m.nGaps], len(m.idle))
	}
	// Nobody comes for the other two within longGap: they count as long.
	now = now.Add(longGap)
	m.arrived(now)
	if m.nGaps != 3 || m.gaps[1] != longGap || m.gaps[2] != longGap || len(m.idle) != 0 {
		t.Fatalf("stale idle moments: gaps %v, %d idle", m.gaps[:m.nGaps], len(m.idle))
	}
	// A request with nobody idle records nothing.
	m.arrived(now)
	if m.nGaps != 3 {
		t.Errorf("arrival with no idle instance recorded a gap")
	}
	// Idle moments are bounded; the oldest become long gaps.
	for range lingerSamples + 5 {
		m.wentIdle(now)
	}
	if len(m.idle) != lingerSamples || m.nGaps != 8 {
		t.Errorf("%d idle moments held, %d gaps; want %d and 8", len(m.idle), m.nGaps, lingerSamples)
	}
	// Only invocations that ended for idling teach the overhead; it is
	// what they billed beyond busy time and linger, averaged.
	m.ended(100*ms, 50*ms, 2*ms, false)
	if m.overhead != 0 {
		t.Errorf("a drained invocation taught overhead %v", m.overhead)
	}
	m.ended(100*ms, 0, 0, true)
	if m.overhead != 0 {
		t.Errorf("an invocation that reported no busy time taught overhead %v", m.overhead)
	}
	m.ended(55*ms, 50*ms, 2*ms, true)
	m.ended(58*ms, 50*ms, 2*ms, true)
	if want := 3*ms + (6*ms-3*ms)/5; m.overhead != want {
		t.Errorf("overhead %v, want %v", m.overhead, want)
	}
}
