// Command echo is a Lambda function written with aws-lambda-go's own
// lambda.Start, used to prove the emulator runs unmodified Go functions.
//
// Event: {"sleep_ms": N, "fail": "message", "print": "line"}. It sleeps,
// prints, then fails with the message or echoes the event with its request id.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	SleepMs int    `json:"sleep_ms"`
	Fail    string `json:"fail"`
	Print   string `json:"print"`
}

type reply struct {
	RequestID   string `json:"request_id"`
	Function    string `json:"function"`
	Event       event  `json:"event"`
	HasDeadline bool   `json:"has_deadline"`
}

func handle(ctx context.Context, ev event) (reply, error) {
	if ev.Print != "" {
		fmt.Println(ev.Print)
	}
	// Sleeps past its deadline if asked: a timeout is a function that does
	// not cooperate.
	time.Sleep(time.Duration(ev.SleepMs) * time.Millisecond)
	if ev.Fail != "" {
		return reply{}, errors.New(ev.Fail)
	}
	lc, _ := lambdacontext.FromContext(ctx)
	_, hasDeadline := ctx.Deadline()
	return reply{RequestID: lc.AwsRequestID, Function: lc.InvokedFunctionArn, Event: ev, HasDeadline: hasDeadline}, nil
}

func main() { lambda.Start(handle) }
