package main

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestOracleBilled(t *testing.T) {
	seed := []phase{{true, 50}, {false, 50}}
	tests := map[string]struct {
		reqs []oracleRequest
		vcpu float64
		q    float64
		want float64
	}{
		"a lone request bills its own duration": {
			[]oracleRequest{{0, seed}}, 1, 0, 100,
		},
		"one arriving in the other's wait shares its invocation": {
			// B's CPU (50..100) runs in A's wait; the union is 0..150.
			[]oracleRequest{{0, seed}, {50, seed}}, 1, 0, 150,
		},
		"one arriving during the other's CPU gets its own at Q=0": {
			[]oracleRequest{{0, seed}, {10, seed}}, 1, 0, 200,
		},
		"... but shares if its CPU may wait 40 ms": {
			// B waits for A's CPU until 50, runs 50..100, waits to 150:
			// union 0..150, 40 ms added latency.
			[]oracleRequest{{0, seed}, {10, seed}}, 1, 40, 150,
		},
		"two vCPUs run two CPU phases at once": {
			[]oracleRequest{{0, seed}, {10, seed}}, 2, 0, 110,
		},
		"a fractional vCPU stretches CPU": {
			// 50 ms of CPU at 0.5 vCPU takes 100 ms; + 50 ms wait.
			[]oracleRequest{{0, seed}}, 0.5, 0, 150,
		},
		"a gap between requests is not billed": {
			[]oracleRequest{{0, seed}, {500, seed}}, 1, 0, 200,
		},
		"a second CPU phase must not collide either": {
			// render: 10 CPU, 100 wait, 40 CPU. B at 105 would run its CPU
			// 105..115 while A's second phase runs 110..150: not at Q=0.
			[]oracleRequest{{0, []phase{{true, 10}, {false, 100}, {true, 40}}},
				{105, []phase{{true, 10}, {false, 100}, {true, 40}}}}, 1, 0, 300,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := oracleBilled(tt.reqs, tt.vcpu, tt.q); math.Abs(got-tt.want) > 1e-6 {
				t.Errorf("billed = %.3f, want %.3f", got, tt.want)
			}
		})
	}
}

// TestOracleCurve: on Poisson arrivals the oracle saves more as Q grows,
// never more than the physical limit, and matches the known figures for
// the seed and api workloads at their moderate rates.
func TestOracleCurve(t *testing.T) {
	tests := map[string]struct {
		phases     []phase
		rate       float64 // per second
		q0lo, q0hi float64 // saving at Q=0, percent
	}{
		"seed 50+50 at 16/s": {[]phase{{true, 50}, {false, 50}}, 16, 8, 20},
		"api 10+100 at 40/s": {[]phase{{true, 10}, {false, 100}}, 40, 45, 70},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			var reqs []oracleRequest
			ideal := 0.0
			for at := 0.0; at < 120_000; at += rng.ExpFloat64() * 1000 / tt.rate {
				reqs = append(reqs, oracleRequest{at, tt.phases})
				ideal += nominal(tt.phases, 1)
			}
			prev := -1.0
			for _, q := range []float64{0, 5, 10, 25} {
				saved := 100 * (1 - oracleBilled(reqs, 1, q)/ideal)
				t.Logf("Q=%2.0f ms: %.1f%% saved", q, saved)
				if saved < prev-0.5 {
					t.Errorf("Q=%v saves %.1f%%, less than a smaller Q's %.1f%%", q, saved, prev)
				}
				prev = saved
				if q == 0 && (saved < tt.q0lo || saved > tt.q0hi) {
					t.Errorf("Q=0 saves %.1f%%, want %v..%v", saved, tt.q0lo, tt.q0hi)
				}
			}
		})
	}
}
