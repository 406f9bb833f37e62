package testbin

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// LocalAWS is the local AWS (localstack/moto/ferry_moto.py: moto_server
// with ferry's CloudFormation providers) running as a process group of its
// own on loopback.
type LocalAWS struct {
	Endpoint string // http://127.0.0.1:port
	cmd      *exec.Cmd
	exited   chan struct{}
}

// StartLocalAWS starts the local AWS on 127.0.0.1:port, its output to
// logs, and waits up to 30 s until it answers. Without python3 and moto it
// fails: they are part of the machine image.
func StartLocalAWS(port int, logs io.Writer) (*LocalAWS, error) {
	cmd := exec.Command("python3", filepath.Join(ModuleRoot(), "localstack", "moto", "ferry_moto.py"),
		"-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting moto (python3 with moto 5 is required): %w", err)
	}
	m := &LocalAWS{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(m.exited) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-m.exited:
			return nil, fmt.Errorf("moto exited at start")
		default:
		}
		if resp, err := http.Get(m.Endpoint + "/moto-api/"); err == nil {
			resp.Body.Close()
			return m, nil
		}
		if time.Now().After(deadline) {
			m.Stop(syscall.SIGKILL, 0)
			return nil, fmt.Errorf("moto did not answer on %s within 30s", m.Endpoint)
		}
	}
}

// Stop signals the local AWS's process group with sig and waits for it to
// exit, killing it if it still runs after grace.
func (m *LocalAWS) Stop(sig syscall.Signal, grace time.Duration) {
	syscall.Kill(-m.cmd.Process.Pid, sig)
	select {
	case <-m.exited:
	case <-time.After(grace):
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.exited
	}
}

// Moto starts the local AWS on a free loopback port for the test, stops it
// at cleanup, and returns its endpoint URL.
func Moto(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var logs bytes.Buffer // read only once moto has exited: Wait has copied it all
	m, err := StartLocalAWS(port, &logs)
	if err != nil {
		t.Fatalf("%v:\n%s", err, logs.String())
	}
	t.Cleanup(func() { m.Stop(syscall.SIGTERM, 5*time.Second) })
	return m.Endpoint
}
