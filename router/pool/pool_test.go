package pool

import "testing"

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
