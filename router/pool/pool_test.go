package pool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferryrun/ferry/internal/tunnel"
)

func TestLaunchesNeeded(t *testing.T) {
	cases := map[string]struct{ waiting, pending, limit, want int }{
		"nothing waiting":          {0, 0, 10, 0},
		"one request, cold":        {1, 0, 10, 1},
		"burst of 200, limit 10":   {200, 0, 10, 20},
		"burst of 201, limit 10":   {201, 0, 10, 21},
		"covered by pending":       {15, 2, 10, 0},
		"partly covered":           {35, 2, 10, 2},
		"limit one":                {7, 3, 1, 4},
		"more pending than needed": {1, 5, 10, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := LaunchesNeeded(c.waiting, c.pending, c.limit); got != c.want {
				t.Errorf("LaunchesNeeded(%d, %d, %d) = %d, want %d", c.waiting, c.pending, c.limit, got, c.want)
			}
		})
	}
}

// TestCover: launches are sized by how many requests an instance takes
// before it says it is full for CPU, learnt from the load hints.
func TestCover(t *testing.T) {
	tests := map[string]struct {
		hints []tunnel.Load
		want  int
	}{
		"no hints: the ceiling":             {nil, 64},
		"I/O-bound, never full":             {[]tunnel.Load{{InFlight: 3}, {InFlight: 7}}, 64},
		"CPU-bound: full beside one":        {repeat(tunnel.Load{InFlight: 1, Full: true}, 20), 1},
		"full at four":                      {repeat(tunnel.Load{InFlight: 4, Full: true}, 20), 4},
		"full alone still covers one":       {repeat(tunnel.Load{InFlight: 0, Full: true}, 20), 1},
		"then room again: cover grows back": {append(repeat(tunnel.Load{InFlight: 1, Full: true}, 20), tunnel.Load{InFlight: 9}), 10},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := New(Config{Function: "f", Launcher: nopLauncher{}})
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tt.hints {
				p.learnCoverLocked(h)
			}
			if got := p.coverLocked(); got != tt.want {
				t.Errorf("cover = %d, want %d", got, tt.want)
			}
		})
	}
}

func repeat(l tunnel.Load, n int) []tunnel.Load {
	out := make([]tunnel.Load, n)
	for i := range out {
		out[i] = l
	}
	return out
}

type nopLauncher struct{}

func (nopLauncher) Prepare(string, int, time.Duration) (string, func(context.Context) error, error) {
	return "", nil, errors.New("no launches in this test")
}
