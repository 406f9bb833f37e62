package localrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/proctree"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
)

// Plane is ferry running on this machine: a Lambda emulator serving
// functions and ferry-router invoking them, as processes on loopback.
// make demo and make bench (Start) and the local data plane of a deployed
// stack (localstack/dataplane) start theirs with Run.
type Plane struct {
	Bin       string           // holds lambda-emulator and ferry-router
	Functions lambdaemu.Config // what the emulator serves, written to Dir/functions.json
	// LambdaURL, if set, is a Lambda Invoke API the router calls instead
	// of the emulator, which is then not started.
	LambdaURL string
	// RouterEnv is the router's environment beyond this process's (its
	// listen addresses among it); Run adds AWS_ENDPOINT_URL_LAMBDA.
	RouterEnv []string
	AdminURL  string // the router's admin listener: Run waits for its /readyz
	// Replicas, if set, are several routers instead of one, each with its
	// own environment (its listen addresses) beside RouterEnv, and its own
	// admin listener; AdminURL is then not used.
	Replicas []Replica
	Dir      string // functions.json, and when Detached the logs and pid files
	// Detached processes outlive this one, each in a process group of its
	// own, logging to Dir/<name>.log, their pids in Dir/<name>.pid.
	// Otherwise they die with this process, logging to Log and RouterLog
	// (discarded if nil).
	Detached       bool
	Log, RouterLog io.Writer
}

// Run starts the emulator on a free loopback address, waits until it
// answers, then the router, and waits until it is ready. It returns the
// Lambda API the router calls and the processes, router last. On an error
// it stops what it started.
func (p Plane) Run(ctx context.Context) (lambdaURL string, procs []*exec.Cmd, err error) {
	defer func() {
		if err != nil {
			Kill(procs, !p.Detached)
		}
	}()
	lambdaURL = p.LambdaURL
	if lambdaURL == "" {
		cfg := filepath.Join(p.Dir, "functions.json")
		if err := writeJSON(cfg, p.Functions); err != nil {
			return "", nil, err
		}
		addr, err := FreeAddr()
		if err != nil {
			return "", nil, err
		}
		emu, err := p.start(p.Log, nil, "lambda-emulator", "lambda-emulator", "-config", cfg, "-listen", addr)
		if emu != nil {
			procs = append(procs, emu) // started, even if its pid file failed
		}
		if err != nil {
			return "", procs, err
		}
		lambdaURL = "http://" + addr
		if err := WaitHTTP(ctx, lambdaURL+"/_emulator/health"); err != nil {
			return "", procs, fmt.Errorf("lambda-emulator: %w%s", err, p.seeLog("lambda-emulator"))
		}
	}
	replicas := p.Replicas
	if len(replicas) == 0 {
		replicas = []Replica{{AdminURL: p.AdminURL}}
	}
	for i, r := range replicas {
		name := "ferry-router"
		if len(p.Replicas) > 0 {
			name += "-" + strconv.Itoa(i+1)
		}
		env := slices.Concat(p.RouterEnv, r.Env, []string{"AWS_ENDPOINT_URL_LAMBDA=" + lambdaURL})
		router, err := p.start(p.RouterLog, env, name, "ferry-router")
		if router != nil {
			procs = append(procs, router)
		}
		if err != nil {
			return "", procs, err
		}
	}
	for i, r := range replicas {
		if err := WaitHTTP(ctx, r.AdminURL+"/readyz"); err != nil {
			return "", procs, fmt.Errorf("ferry-router %d: %w%s", i+1, err, p.seeLog("ferry-router"))
		}
	}
	return lambdaURL, procs, nil
}

// Replica is one of several routers.
type Replica struct {
	Env      []string // its own settings, beside Plane.RouterEnv
	AdminURL string   // its admin listener
}

func (p Plane) seeLog(name string) string {
	if !p.Detached {
		return ""
	}
	return " (see " + filepath.Join(p.Dir, name+".log") + ")"
}

// start starts Bin/bin with args and env added to this process's, as
// name (its log and pid files when detached).
func (p Plane) start(logs io.Writer, env []string, name, bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(filepath.Join(p.Bin, bin), args...)
	cmd.Env = append(os.Environ(), env...)
	if p.Detached {
		f, err := os.OpenFile(filepath.Join(p.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		logs = f
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if logs == nil {
		logs = io.Discard
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if p.Detached {
		// The pid and its start time: once the process is gone (and
		// reaped below if this process outlives it) its pid may name
		// another, which a stop must not signal.
		started, _ := proctree.Started(cmd.Process.Pid)
		go cmd.Wait()
		if err := os.WriteFile(filepath.Join(p.Dir, name+".pid"), fmt.Appendf(nil, "%d %d\n", cmd.Process.Pid, started), 0o644); err != nil {
			return cmd, err
		}
	}
	return cmd, nil
}

// Kill ends procs, last first, each with its process group where it has
// one of its own: SIGTERM, then SIGKILL after 15 s. reap waits for each
// (processes Run started attached; a detached one is reaped already).
func Kill(procs []*exec.Cmd, reap bool) {
	for _, c := range slices.Backward(procs) {
		Stop(c.Process.Pid)
		if reap {
			c.Wait()
		}
	}
}

// Stop ends the process pid (with its process group where it leads one):
// SIGTERM, then SIGKILL if it still runs 15 s later. Its pid may be
// reused once it is gone: the SIGKILL goes only to the process that got
// the SIGTERM.
func Stop(pid int) {
	target := pid
	if pg, err := syscall.Getpgid(pid); err == nil && pg == pid {
		target = -pid
	}
	started, known := proctree.Started(pid)
	if err := syscall.Kill(target, syscall.SIGTERM); errors.Is(err, syscall.ESRCH) {
		return
	}
	same := func() bool {
		t, ok := proctree.Started(pid)
		return proctree.Alive(pid) && (!known || (ok && t == started))
	}
	for deadline := time.Now().Add(15 * time.Second); same() && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
	}
	if same() {
		syscall.Kill(target, syscall.SIGKILL)
	}
}
