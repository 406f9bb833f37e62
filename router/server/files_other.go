//go:build !unix

package server

// openFileLimit is 0: no limit is known here.
func openFileLimit() int { return 0 }
