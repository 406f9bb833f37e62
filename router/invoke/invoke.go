// Package invoke starts dial-back invocations with the Lambda Invoke API:
// it mints the tunnel token, builds the payload, invokes RequestResponse and
// retries throttles and service errors with backoff.
package invoke

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/cenkalti/backoff/v4"

	"github.com/ferryrun/ferry/internal/dialback"
	"github.com/ferryrun/ferry/internal/tunnel"
	"github.com/ferryrun/ferry/router/pool"
)

// API is the part of the Lambda client the Invoker uses.
type API interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, opts ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

// Result describes one invocation that ran.
type Result struct {
	Function string
	BilledMs int64 // from the REPORT line of the log tail; 0 if absent
	InitMs   int64 // Init Duration, when the invocation started a sandbox
	Cold     bool
	Err      error // the function error, if any
	// CPU the sandbox used during the invocation, as its bootstrap
	// measured it (a tunnel's summary, a plain invocation's CPU line); 0
	// from a runtime that does not report it.
	CPU time.Duration
	// What the instance reported of itself when it ended (zero from a
	// bootstrap that predates a field).
	Requests int64 // streams it handed to the app
	BusyUs   int64 // time with at least one request in the app
	LingerUs int64 // the idle linger it kept
	// BackgroundUs is the time the app's background work (waitUntil)
	// kept it going with no request in flight.
	BackgroundUs int64
	Ended        string // idle, deadline or router-closed; "plain" for Plain's
}

// Invoker implements pool.Launcher.
type Invoker struct {
	// static after construction
	api           API
	issuer        *tunnel.Issuer
	router        string // host:port bootstraps dial
	pin           string
	retryFor      time.Duration
	log           *slog.Logger
	onResult      func(Result)
	onThrottle    func(function string)
	onUnavailable func(function string, err error)
}

// Config configures an Invoker.
type Config struct {
	API    API            // required
	Issuer *tunnel.Issuer // required
	Router string         // host:port of the tunnel listener as bootstraps reach it; required
	Pin    string         // pin of the tunnel certificate; required
	// RetryFor bounds retries of throttles and service errors for one
	// invocation. If zero, 10s.
	RetryFor time.Duration
	Logger   *slog.Logger // if nil, slog.Default()
	// OnResult and OnThrottle, if not nil, observe outcomes for metrics.
	OnResult   func(Result)
	OnThrottle func(function string)
	// OnUnavailable, if not nil, is told of each Invoke call that Lambda
	// did not take for a reason that may pass (a throttle, a 5xx, no
	// answer): what a region's trouble looks like from here.
	OnUnavailable func(function string, err error)
}

// New returns an Invoker.
func New(c Config) (*Invoker, error) {
	if c.API == nil || c.Issuer == nil || c.Router == "" || c.Pin == "" {
		return nil, errors.New("invoke: API, Issuer, Router and Pin are required")
	}
	if c.RetryFor <= 0 {
		c.RetryFor = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.OnResult == nil {
		c.OnResult = func(Result) {}
	}
	if c.OnThrottle == nil {
		c.OnThrottle = func(string) {}
	}
	if c.OnUnavailable == nil {
		c.OnUnavailable = func(string, error) {}
	}
	return &Invoker{api: c.API, issuer: c.Issuer, router: c.Router, pin: c.Pin, retryFor: c.RetryFor,
		log: c.Logger, onResult: c.OnResult, onThrottle: c.OnThrottle, onUnavailable: c.OnUnavailable}, nil
}

// Prepare mints a token for l's function and returns its id and the
// invocation to run, which asks for l's streams, linger and warmth.
func (i *Invoker) Prepare(l pool.Launch) (string, func(context.Context) error, error) {
	function := l.Function
	tok, claims, err := i.issuer.Mint(function)
	if err != nil {
		return "", nil, fmt.Errorf("minting token: %w", err)
	}
	payload, err := dialback.Marshal(dialback.Payload{
		Router: i.router, Token: tok, Pin: i.pin, Function: function, MaxConcurrency: l.MaxConcurrency, Warm: l.Warm,
		First: l.First,
	}.WithLinger(l.Linger))
	if err != nil {
		return "", nil, err
	}
	// A request the event carries runs only once the router claims it on
	// the tunnel, which one token opens once: a retry cannot run it twice.
	return claims.ID, func(ctx context.Context) error { return i.invoke(ctx, function, payload) }, nil
}

func (i *Invoker) invoke(ctx context.Context, function string, payload []byte) error {
	out, err := i.call(ctx, function, payload, 50*time.Millisecond, 2*time.Second, retryable)
	if err != nil {
		return err
	}
	r := outcome(function, out)
	if r.Err == nil {
		var sum dialback.Summary
		if json.Unmarshal(out.Payload, &sum) == nil {
			r.Requests, r.BusyUs, r.LingerUs, r.Ended = sum.Requests, sum.BusyUs, sum.LingerUs, sum.Ended
			r.BackgroundUs = sum.BackgroundUs
			if sum.CPUUs > 0 {
				r.CPU = time.Duration(sum.CPUUs) * time.Microsecond
			}
		}
	}
	i.onResult(r)
	return r.Err
}

// Plain invokes function once with event, an ordinary HTTP event (a
// Function URL one) that the bootstrap serves as one request, and returns
// the response event. Only refusals that say the function did not run
// (throttles) are retried: any other failure may have reached the app. An
// *Error whose Started is false never did.
func (i *Invoker) Plain(ctx context.Context, function string, event []byte) ([]byte, error) {
	out, err := i.call(ctx, function, event, 20*time.Millisecond, time.Second, notRun)
	if err != nil {
		return nil, err
	}
	r := outcome(function, out)
	r.Requests, r.Ended = 1, "plain"
	i.onResult(r)
	return out.Payload, r.Err
}

// call invokes function with payload, RequestResponse with the log tail,
// retrying the errors retry accepts with backoff from first to most, for
// up to retryFor.
func (i *Invoker) call(ctx context.Context, function string, payload []byte, first, most time.Duration, retry func(error) bool) (*lambda.InvokeOutput, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = first, most, i.retryFor
	var out *lambda.InvokeOutput
	op := func() error {
		var err error
		out, err = i.api.Invoke(ctx, &lambda.InvokeInput{
			FunctionName:   aws.String(function),
			InvocationType: types.InvocationTypeRequestResponse,
			LogType:        types.LogTypeTail,
			Payload:        payload,
		})
		if err != nil && regional(err) {
			i.onUnavailable(function, err) // retried or not: a reset after sending is the region's trouble too
		}
		switch {
		case err == nil:
			return nil
		case !retry(err):
			return backoff.Permanent(err)
		case isThrottle(err):
			i.onThrottle(function)
		}
		i.log.Debug("invoke retrying", "function", function, "err", err)
		return err
	}
	if err := backoff.Retry(op, backoff.WithContext(b, ctx)); err != nil {
		class := "InvokeFailed"
		var api smithy.APIError
		if errors.As(err, &api) {
			class = api.ErrorCode()
		}
		return nil, &Error{Class: class, Started: !notRun(err) && !neverSent(err) && !refused(err), Err: fmt.Errorf("invoking %s: %w", function, err)}
	}
	return out, nil
}

// outcome reads what an invocation billed, from its REPORT line, and its
// function error.
func outcome(function string, out *lambda.InvokeOutput) Result {
	r := Result{Function: function}
	if out.LogResult != nil {
		if tail, err := base64.StdEncoding.DecodeString(*out.LogResult); err == nil {
			r.BilledMs, r.InitMs = parseReport(string(tail))
			r.Cold = r.InitMs > 0
			id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
			r.CPU, _ = dialback.CPUFromLog(string(tail), id)
		}
	}
	if out.FunctionError != nil {
		class, msg := errorMessage(out.Payload)
		if class == "" {
			class = aws.ToString(out.FunctionError)
		}
		r.Err = &Error{Class: class, Started: true, Err: fmt.Errorf("function error (%s): %s", aws.ToString(out.FunctionError), msg)}
	}
	return r
}

var (
	billedRE = regexp.MustCompile(`Billed Duration: (\d+) ms`)
	initRE   = regexp.MustCompile(`Init Duration: ([\d.]+) ms`)
)

// parseReport reads the last REPORT line's billed and init durations.
func parseReport(tail string) (billedMs, initMs int64) {
	if m := billedRE.FindAllStringSubmatch(tail, -1); len(m) > 0 {
		billedMs, _ = strconv.ParseInt(m[len(m)-1][1], 10, 64)
	}
	if m := initRE.FindAllStringSubmatch(tail, -1); len(m) > 0 {
		f, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
		initMs = int64(f + 0.999)
	}
	return billedMs, initMs
}

// errorMessage returns a function error's type and its message.
func errorMessage(payload []byte) (class, msg string) {
	var e struct {
		Type    string `json:"errorType"`
		Message string `json:"errorMessage"`
	}
	if json.Unmarshal(payload, &e) == nil && e.Message != "" {
		if e.Type != "" {
			return e.Type, e.Type + ": " + e.Message
		}
		return "", e.Message
	}
	if len(payload) > 512 {
		payload = payload[:512]
	}
	return "", string(payload)
}

// Error is an invocation that failed: the invoke itself, or the function
// (its init, or the bootstrap). Class names the failure for clients and
// metrics (Lambda's error type, or the API's error code) without its
// message, which may say more than a client should read.
type Error struct {
	Class string
	Err   error
	// Started, for a plain invocation, says the request may have reached
	// the app: it must not be sent again.
	Started bool
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// FailureClass returns Class (pool.Launcher's errors may have one).
func (e *Error) FailureClass() string { return e.Class }

// retryable reports throttles, Lambda's own 5xx errors and transport
// failures: everything that may succeed when tried again.
func retryable(err error) bool {
	if cancelled(err) {
		return false
	}
	if isThrottle(err) {
		return true
	}
	var svc *types.ServiceException
	var notReady *types.ResourceNotReadyException
	if errors.As(err, &svc) || errors.As(err, &notReady) {
		return true
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		if code := re.HTTPStatusCode(); code != 0 {
			return code >= 500
		}
		return neverSent(err)
	}
	var api smithy.APIError
	return !errors.As(err, &api) // no API answer at all: a transport error
}

// neverSent reports a call whose connection was never made (refused, timed
// out, a name that did not resolve): the only transport failure sure not to
// have started the invocation. One cut after the request went may have,
// and its token is spent.
func neverSent(err error) bool {
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != 0 {
		return false
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// refused reports an answer of Lambda's own in the 4xx range (no such
// function, not allowed, a throttle, a payload too large): Lambda turned
// the call down before invoking anything.
func refused(err error) bool {
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	code := re.HTTPStatusCode()
	return code >= 400 && code < 500
}

// regional reports a failure that says the region's Lambda is not taking
// this router's invocations, rather than one function's own trouble: an
// account-level throttle, Lambda's own error, no connection. A function's
// reserved concurrency (0 pauses it) or its configuration (a subnet, a
// KMS key) is not the region's.
func regional(err error) bool {
	if cancelled(err) {
		return false
	}
	var tm *types.TooManyRequestsException
	if errors.As(err, &tm) {
		return tm.Reason == types.ThrottleReasonConcurrentInvocationLimitExceeded || tm.Reason == types.ThrottleReasonCallerRateLimitExceeded
	}
	var svc *types.ServiceException
	if errors.As(err, &svc) {
		return true
	}
	var api smithy.APIError
	return !errors.As(err, &api) // a transport failure
}

// cancelled reports a call its caller gave up on (the SDK's CanceledError
// replaces whatever the transport said then).
func cancelled(err error) bool {
	var c *smithy.CanceledError
	return errors.As(err, &c)
}

// notRun reports a refusal that says the function did not run: a
// throttle, or a function not ready.
func notRun(err error) bool {
	var notReady *types.ResourceNotReadyException
	return isThrottle(err) || errors.As(err, &notReady)
}

func isThrottle(err error) bool {
	var tm *types.TooManyRequestsException
	var ec2 *types.EC2ThrottledException
	return errors.As(err, &tm) || errors.As(err, &ec2)
}
