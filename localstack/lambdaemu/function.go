package lambdaemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// function is one configured function and its sandboxes.
type function struct {
	// static after construction
	emu    *Emulator
	cfg    Function
	arn    string
	optDir string // the merged layers, standing in for /opt

	mu    sync.Mutex
	idle  []*sandbox        // guarded by mu; warm, frozen, waiting at /next
	all   map[*sandbox]bool // guarded by mu; every live sandbox
	busy  int               // guarded by mu; invocations holding or starting a sandbox
	stats Stats             // guarded by mu
}

// errThrottled means the function is at its concurrency limit.
var errThrottled = errors.New("concurrency limit reached")

// acquire returns a warm sandbox, or starts one if the function is under its
// concurrency limit. cold reports whether a new sandbox was started.
func (fn *function) acquire(ctx context.Context) (sb *sandbox, cold bool, err error) {
	fn.mu.Lock()
	if fn.busy >= fn.cfg.Concurrency {
		fn.stats.Throttles++
		fn.mu.Unlock()
		return nil, false, errThrottled
	}
	fn.busy++
	if n := len(fn.idle); n > 0 {
		sb = fn.idle[n-1] // most recently used: warmest caches, like Lambda
		fn.idle = fn.idle[:n-1]
		fn.mu.Unlock()
		return sb, false, nil
	}
	fn.mu.Unlock()

	sb, err = fn.startSandbox()
	if err == nil {
		fn.mu.Lock()
		fn.all[sb] = true
		fn.stats.SandboxesStarted++
		fn.mu.Unlock()
		err = sb.awaitInit(ctx)
		if err == nil {
			fn.mu.Lock()
			sb.mu.Lock()
			fn.stats.InitMs += sb.initDur.Milliseconds()
			sb.mu.Unlock()
			fn.mu.Unlock()
			return sb, true, nil
		}
		sb.kill()
	}
	fn.release()
	return nil, true, err
}

// release gives back the concurrency slot acquire took.
func (fn *function) release() {
	fn.mu.Lock()
	fn.busy--
	fn.mu.Unlock()
}

// markIdle is called when a sandbox has answered its invocation: it can
// take another, which waits in its next channel until the runtime asks.
func (fn *function) markIdle(sb *sandbox) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if fn.all[sb] {
		fn.idle = append(fn.idle, sb)
	}
}

func (fn *function) removeIdleLocked(sb *sandbox) {
	for i, s := range fn.idle {
		if s == sb {
			fn.idle = append(fn.idle[:i], fn.idle[i+1:]...)
			return
		}
	}
}

func (fn *function) removeSandbox(sb *sandbox) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	delete(fn.all, sb)
	fn.removeIdleLocked(sb)
}

// reapIdle kills sandboxes idle for longer than ttl.
func (fn *function) reapIdle(ttl time.Duration) {
	fn.mu.Lock()
	var old []*sandbox
	keep := fn.idle[:0]
	for _, sb := range fn.idle {
		sb.mu.Lock()
		idleFor := time.Since(sb.idleFrom)
		sb.mu.Unlock()
		if idleFor > ttl {
			old = append(old, sb)
		} else {
			keep = append(keep, sb)
		}
	}
	fn.idle = keep
	fn.mu.Unlock()
	for _, sb := range old {
		sb.kill()
	}
}

func (fn *function) killAll() {
	fn.mu.Lock()
	all := make([]*sandbox, 0, len(fn.all))
	for sb := range fn.all {
		all = append(all, sb)
	}
	fn.mu.Unlock()
	for _, sb := range all {
		sb.kill()
	}
	// Bounded: a process the kernel will not let die (stuck in an
	// uninterruptible wait) must not hang whoever closes the emulator.
	timeout := time.NewTimer(killWait)
	defer timeout.Stop()
	for _, sb := range all {
		select {
		case <-sb.exited:
		case <-timeout.C:
			fn.emu.log.Error("sandbox did not exit after SIGKILL; leaving it", "function", fn.cfg.Name, "sandbox", sb.id, "pid", sb.pid)
			return
		}
	}
}

// killWait bounds how long killAll waits for killed sandboxes to exit.
const killWait = 10 * time.Second

// entrypoint returns what Lambda would exec: for a provided runtime,
// $LAMBDA_TASK_ROOT/bootstrap or /opt/bootstrap; with AWS_LAMBDA_EXEC_WRAPPER,
// the wrapper with the runtime's bootstrap as its argument.
func (fn *function) entrypoint() (string, []string, error) {
	if w := fn.cfg.Env["AWS_LAMBDA_EXEC_WRAPPER"]; w != "" {
		return fn.hostPath(w), []string{"/var/runtime/bootstrap"}, nil
	}
	for _, p := range []string{filepath.Join(fn.cfg.CodeDir, "bootstrap"), filepath.Join(fn.optDir, "bootstrap")} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil, nil
		}
	}
	return "", nil, &initError{Type: "Runtime.InvalidEntrypoint", Message: "no executable bootstrap in the function code or its layers"}
}

// hostPath maps a sandbox path to this machine: /opt/x is the merged layers,
// /var/task/x the code dir. This is the emulator's one path translation.
func (fn *function) hostPath(p string) string {
	if rest, ok := strings.CutPrefix(p, "/opt/"); ok {
		return filepath.Join(fn.optDir, rest)
	}
	if rest, ok := strings.CutPrefix(p, "/var/task/"); ok {
		return filepath.Join(fn.cfg.CodeDir, rest)
	}
	return p
}

// environ is the environment Lambda gives a sandbox: its reserved
// variables, then the function's own (which cannot override reserved ones).
func (fn *function) environ(runtimeAPI string, appPort int) []string {
	c := fn.cfg
	env := map[string]string{}
	for k, v := range c.Env {
		env[k] = v
	}
	if w, ok := env["AWS_LAMBDA_EXEC_WRAPPER"]; ok {
		env["AWS_LAMBDA_EXEC_WRAPPER"] = fn.hostPath(w)
	}
	reserved := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          runtimeAPI,
		"_HANDLER":                        c.Handler,
		"LAMBDA_TASK_ROOT":                c.CodeDir,
		"LAMBDA_RUNTIME_DIR":              "/var/runtime",
		"AWS_EXECUTION_ENV":               "AWS_Lambda_" + strings.ReplaceAll(c.Runtime, ".", ""),
		"AWS_LAMBDA_FUNCTION_NAME":        c.Name,
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": fmt.Sprint(c.MemoryMB),
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/" + c.Name,
		"AWS_LAMBDA_LOG_STREAM_NAME":      time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + strings.ReplaceAll(newID(), "-", ""),
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_REGION":                      fn.emu.region,
		"AWS_DEFAULT_REGION":              fn.emu.region,
		"TZ":                              ":UTC",
		"LANG":                            "en_US.UTF-8",
		"PATH":                            filepath.Join(fn.optDir, "bin") + ":/usr/local/bin:/usr/bin:/bin",
		"LD_LIBRARY_PATH":                 filepath.Join(fn.optDir, "lib"),
	}
	if c.Runtime == "" {
		reserved["AWS_EXECUTION_ENV"] = "AWS_Lambda_providedal2023"
	}
	// Lambda gives each sandbox its own network namespace; here sandboxes
	// share the host's. So that two sandboxes' apps do not collide on one
	// port, each gets a port of its own (see ports) unless the function
	// pins one.
	if _, pinned := env["FERRY_APP_PORT"]; !pinned && appPort > 0 {
		env["FERRY_APP_PORT"] = strconv.Itoa(appPort)
	}
	for k, v := range reserved {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// mergeLayers builds dir as Lambda builds /opt: each layer's entries, a
// later layer replacing an earlier one's entry of the same name.
func mergeLayers(dir string, layers []string) error {
	for _, l := range layers {
		entries, err := os.ReadDir(l)
		if err != nil {
			return err
		}
		for _, e := range entries {
			dst := filepath.Join(dir, e.Name())
			os.RemoveAll(dst)
			if err := os.Symlink(filepath.Join(l, e.Name()), dst); err != nil {
				return err
			}
		}
	}
	return nil
}
