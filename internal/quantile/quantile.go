// Package quantile is the one rank rule ferry's figures use for
// percentiles (the router's metrics, the bench, the end-to-end suite):
// nearest rank, so a p99 is a value that was observed, never one between.
package quantile

import (
	"cmp"
	"math"
	"slices"
)

// Sorted is the nearest-rank p-quantile (0 < p <= 1) of sorted, which
// must be in ascending order; zero for no values.
func Sorted[T cmp.Ordered](sorted []T, p float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Of is the nearest-rank p-quantile of values, in any order (they are
// not changed).
func Of[T cmp.Ordered](values []T, p float64) T {
	s := slices.Clone(values)
	slices.Sort(s)
	return Sorted(s, p)
}
