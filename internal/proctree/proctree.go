// Package proctree reads a process's descendants from /proc (Linux), for
// signalling and measuring a whole tree: a shell that forks the app, an
// app that forks workers.
package proctree

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// maxDepth bounds the walk; real trees are a few levels deep.
const maxDepth = 16

// Descendants returns pid's descendants, parents before children. A process
// that exits during the walk is simply missing.
func Descendants(pid int) []int {
	var out []int
	var walk func(pid, depth int)
	walk = func(pid, depth int) {
		if depth >= maxDepth {
			return
		}
		for _, c := range children(pid) {
			out = append(out, c)
			walk(c, depth+1)
		}
	}
	walk(pid, 0)
	return out
}

// children lists pid's children across all its threads.
func children(pid int) []int {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for f := range strings.FieldsSeq(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// Signal sends sig to pid's process group, to pid, and to every descendant
// (which may have left the group). Descendants are found before anything is
// signalled, so a killed parent cannot orphan its children first.
func Signal(pid int, sig syscall.Signal) {
	tree := append([]int{pid}, Descendants(pid)...)
	syscall.Kill(-pid, sig) // a no-op if pid leads no group
	for _, p := range tree {
		syscall.Kill(p, sig)
	}
}

// Status returns the value of a field of /proc/<pid>/status, such as
// "VmHWM" ("1234 kB"), or "".
func Status(pid int, field string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ""
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Started returns when pid started, in clock ticks since boot (field 22 of
// /proc/<pid>/stat), and false if it cannot be read. With the pid it names
// one process: a pid is reused once its process is gone, its start time
// is not.
func Started(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields that follow start after the last ')', at field 3.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return t, err == nil
}

// Alive reports whether pid is a process that has not exited: a zombie
// (exited, not yet reaped by its parent) counts as gone.
func Alive(pid int) bool {
	st := Status(pid, "State") // "S (sleeping)", "Z (zombie)", ...
	return st != "" && st[0] != 'Z' && st[0] != 'X'
}
