//go:build unix

package server

import "syscall"

// openFileLimit is the process's limit on open files (Go raises it to the
// hard limit at start), 0 if it cannot be read or is in effect unlimited.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 0
	}
	return int(rl.Cur)
}
