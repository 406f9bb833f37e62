//go:build race

package testbin

// Race reports whether this test binary runs under the race detector: the
// binaries Build makes of ferry's own programs then do too.
const Race = true
