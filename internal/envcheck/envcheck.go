// Package envcheck finds the settings a program does not know among its
// environment variables: a misspelt one is otherwise ignored in silence,
// and the program runs with a default its user thinks they changed.
package envcheck

import (
	"fmt"
	"slices"
	"strings"
)

// Unknown returns a sentence for each variable in environ ("NAME=value"
// entries) whose name starts with prefix and is not in known, naming the
// nearest known name where one is close enough to be a misspelling. The
// sentences never carry a value: a value may be a secret.
func Unknown(environ []string, prefix string, known []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, prefix) || slices.Contains(known, name) {
			continue
		}
		msg := fmt.Sprintf("%s is not a setting this program reads; it is ignored", name)
		if near := nearest(name, prefix, known); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
		out = append(out, msg)
	}
	slices.Sort(out)
	return out
}

// nearest is the known name fewest edits away from name, if it is within a
// misspelling's reach: a third of what follows the shared prefix.
func nearest(name, prefix string, known []string) string {
	rest := strings.TrimPrefix(name, prefix)
	best, bestD := "", max(1, len(rest)/3)+1
	for _, k := range known {
		if d := distance(rest, strings.TrimPrefix(k, prefix)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b, in bytes (names
// are ASCII).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
