package quantile

import (
	"testing"
	"time"
)

func TestNearestRank(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	for _, tc := range []struct {
		values []float64
		p      float64
		want   float64
	}{
		{nil, 0.5, 0},
		{[]float64{7}, 0.99, 7},
		{[]float64{3, 1, 2}, 0.5, 2},
		{[]float64{1, 2, 3, 4}, 0.5, 2}, // nearest rank: ceil(0.5*4) = 2nd
		{hundred, 0.99, 99},
		{hundred, 1, 100},
		{hundred, 0.001, 1},
	} {
		if got := Of(tc.values, tc.p); got != tc.want {
			t.Errorf("Of(%v, %v) = %v, want %v", tc.values, tc.p, got, tc.want)
		}
	}
	if got := Of([]time.Duration{3 * time.Second, time.Second, 2 * time.Second}, 0.99); got != 3*time.Second {
		t.Errorf("p99 of durations = %v", got)
	}
}
