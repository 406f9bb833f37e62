// Command echo is a Lambda function written with aws-lambda-go's own
// lambda.Start, used to prove the emulator runs unmodified Go functions.
//
// Event: {"sleep_ms": N, "fail": "message", "panic": "message", "print":
// "line", "burn_ms": N, "threads": N, "alloc_mb": N, "spawn_sleep_s": N}.
// spawn_sleep_s starts a child process (sleep N) and answers its pid in
// child_pid, leaving it running. "panic" panics in
// the handler (aws-lambda-go reports it, then its runtime exits). It burns burn_ms of CPU on each of threads
// threads, touches alloc_mb of memory, sleeps, prints, then fails with the
// message or echoes the event with its request id and the wall time taken.
package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/ferryrun/ferry/internal/cpuburn"
)

type event struct {
	SleepMs int    `json:"sleep_ms"`
	Fail    string `json:"fail"`
	Panic   string `json:"panic"`
	Print   string `json:"print"`
	BurnMs  int    `json:"burn_ms"`
	Threads int    `json:"threads"`
	AllocMB int    `json:"alloc_mb"`
	SpawnS  int    `json:"spawn_sleep_s"`
}

type reply struct {
	RequestID   string `json:"request_id"`
	Function    string `json:"function"`
	Event       event  `json:"event"`
	HasDeadline bool   `json:"has_deadline"`
	TookMs      int64  `json:"took_ms"`
	ChildPID    int    `json:"child_pid,omitempty"`
}

// keep holds allocated memory past the handler, as a leaking function does.
var keep [][]byte

func handle(ctx context.Context, ev event) (reply, error) {
	start := time.Now()
	var wg sync.WaitGroup
	for range max(ev.Threads, 1) * min(ev.BurnMs, 1) {
		wg.Go(func() { cpuburn.Burn(time.Duration(ev.BurnMs) * time.Millisecond) })
	}
	wg.Wait()
	for range ev.AllocMB {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 { // one write a page makes it resident
			b[i] = 1
		}
		keep = append(keep, b)
	}
	if ev.Print != "" {
		fmt.Println(ev.Print)
	}
	// Sleeps past its deadline if asked: a timeout is a function that does
	// not cooperate.
	time.Sleep(time.Duration(ev.SleepMs) * time.Millisecond)
	if ev.Fail != "" {
		return reply{}, errors.New(ev.Fail)
	}
	if ev.Panic != "" {
		panic(ev.Panic)
	}
	child := 0
	if ev.SpawnS > 0 {
		cmd := exec.Command("sleep", strconv.Itoa(ev.SpawnS))
		if err := cmd.Start(); err != nil {
			return reply{}, err
		}
		child = cmd.Process.Pid
	}
	lc, _ := lambdacontext.FromContext(ctx)
	_, hasDeadline := ctx.Deadline()
	return reply{RequestID: lc.AwsRequestID, Function: lc.InvokedFunctionArn, Event: ev, HasDeadline: hasDeadline,
		TookMs: time.Since(start).Milliseconds(), ChildPID: child}, nil
}

func main() { lambda.Start(handle) }
