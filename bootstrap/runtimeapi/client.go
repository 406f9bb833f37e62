package runtimeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Runtime API paths and headers.
const (
	apiVersion = "2018-06-01"

	HeaderRequestID          = "Lambda-Runtime-Aws-Request-Id"
	HeaderDeadlineMs         = "Lambda-Runtime-Deadline-Ms"
	HeaderFunctionARN        = "Lambda-Runtime-Invoked-Function-Arn"
	HeaderTraceID            = "Lambda-Runtime-Trace-Id"
	HeaderClientContext      = "Lambda-Runtime-Client-Context"
	HeaderCognitoIdentity    = "Lambda-Runtime-Cognito-Identity"
	HeaderFunctionErrorType  = "Lambda-Runtime-Function-Error-Type"
	contentTypeJSON          = "application/json"
	maxEventBytes            = 6 << 20 // Lambda's synchronous payload limit
	errorResponseBytesBudget = 256 << 10
)

// Invocation is one event handed to the runtime by Next.
type Invocation struct {
	RequestID       string
	Deadline        time.Time
	FunctionARN     string
	TraceID         string
	ClientContext   string
	CognitoIdentity string
	Payload         []byte
}

// Client talks to one Runtime API endpoint. Its zero value is not usable;
// use New.
type Client struct {
	base string
	http *http.Client
}

// New returns a Client for the host:port in AWS_LAMBDA_RUNTIME_API.
func New(hostport string) *Client {
	return &Client{
		base: "http://" + hostport + "/" + apiVersion + "/runtime/",
		// No client timeout: Next is a long poll that lasts until the next
		// event. Calls are bounded by their contexts instead.
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
	}
}

// Next blocks until Lambda hands the runtime an invocation.
func (c *Client) Next(ctx context.Context) (*Invocation, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"invocation/next", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("getting next invocation: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError("next", resp)
	}
	payload, err := io.ReadAll(io.LimitReader(resp.Body, maxEventBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading invocation payload: %w", err)
	}
	if len(payload) > maxEventBytes {
		return nil, fmt.Errorf("invocation payload over %d bytes", maxEventBytes)
	}
	inv := &Invocation{
		RequestID:       resp.Header.Get(HeaderRequestID),
		FunctionARN:     resp.Header.Get(HeaderFunctionARN),
		TraceID:         resp.Header.Get(HeaderTraceID),
		ClientContext:   resp.Header.Get(HeaderClientContext),
		CognitoIdentity: resp.Header.Get(HeaderCognitoIdentity),
		Payload:         payload,
	}
	if inv.RequestID == "" {
		return nil, fmt.Errorf("next invocation has no %s header", HeaderRequestID)
	}
	ms, err := strconv.ParseInt(resp.Header.Get(HeaderDeadlineMs), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("next invocation has a bad %s header: %w", HeaderDeadlineMs, err)
	}
	inv.Deadline = time.UnixMilli(ms)
	return inv, nil
}

// Respond posts the invocation's result. Lambda may freeze the sandbox as
// soon as this returns: nothing may be left running that needs to finish.
func (c *Client) Respond(ctx context.Context, requestID string, body []byte) error {
	return c.post(ctx, "invocation/"+requestID+"/response", body, "")
}

// Trailers that end a streamed response as failed.
const (
	TrailerErrorType = "Lambda-Runtime-Function-Error-Type"
	TrailerErrorBody = "Lambda-Runtime-Function-Error-Body" // base64
)

// RespondStream streams the invocation's response from body, in the
// Runtime API's streaming mode, with contentType. trailer is sent once body
// is done (io.EOF): TrailerErrorType and TrailerErrorBody set there by then
// fail the invocation after what was streamed.
func (c *Client) RespondStream(ctx context.Context, requestID, contentType string, body io.Reader, trailer http.Header) error {
	path := "invocation/" + requestID + "/response"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, body)
	if err != nil {
		return err
	}
	req.ContentLength = -1 // chunked: the body streams
	req.Header.Set("Lambda-Runtime-Function-Response-Mode", "streaming")
	req.Header.Set("Content-Type", contentType)
	req.Trailer = trailer
	return c.do(req, path)
}

// Fail reports the invocation as a function error of the given type.
func (c *Client) Fail(ctx context.Context, requestID, errorType string, cause error) error {
	return c.post(ctx, "invocation/"+requestID+"/error", ErrorBody(errorType, cause), errorType)
}

// InitError reports that the runtime could not initialize. Lambda ends the
// sandbox; the process should exit after this returns.
func (c *Client) InitError(ctx context.Context, errorType string, cause error) error {
	return c.post(ctx, "init/error", ErrorBody(errorType, cause), errorType)
}

// ErrorBody is the JSON Lambda takes for a function error: an error
// response's body, and (base64) a streamed response's TrailerErrorBody.
func ErrorBody(errorType string, cause error) []byte {
	msg := cause.Error()
	if len(msg) > errorResponseBytesBudget {
		msg = msg[:errorResponseBytesBudget]
	}
	b, _ := json.Marshal(struct {
		Message string `json:"errorMessage"`
		Type    string `json:"errorType"`
	}{msg, errorType})
	return b
}

func (c *Client) post(ctx context.Context, path string, body []byte, errorType string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentTypeJSON)
	if errorType != "" {
		req.Header.Set(HeaderFunctionErrorType, errorType)
	}
	return c.do(req, path)
}

// do sends a post to path and wants it accepted.
func (c *Client) do(req *http.Request, path string) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("posting %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return statusError(path, resp)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

func statusError(what string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return fmt.Errorf("runtime api %s: %s: %s", what, resp.Status, bytes.TrimSpace(b))
}
