package main_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// streamingFunction starts the goapp with FERRY_INVOKE_MODE=response_stream
// under the local Lambda, and returns an AWS SDK client for it.
func streamingFunction(t *testing.T) *lambda.Client {
	emu := newEmulator(t, goFunction("app", 30*time.Second, map[string]string{"FERRY_INVOKE_MODE": "response_stream"}))
	srv := httptest.NewServer(emu.Handler())
	t.Cleanup(srv.Close)
	return lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""), Retryer: aws.NopRetryer{}})
}

// With FERRY_INVOKE_MODE=response_stream, a direct invocation streams: an
// InvokeWithResponseStream caller (the AWS SDK, reading the local
// Lambda's event stream) reads the first chunk while the app is still
// writing, then the HTTP integration prelude's status and headers and the
// whole body, and a clean end.
func TestStreamedResponse(t *testing.T) {
	client := streamingFunction(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	out, err := client.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{
		FunctionName: aws.String("app"), LogType: types.LogTypeTail,
		Payload: httpEvent("GET", "/stream", "chunks=3&interval_ms=500", nil, nil, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	stream := out.GetStream()
	defer stream.Close()
	var got bytes.Buffer
	var first time.Time
	var done *types.InvokeWithResponseStreamCompleteEvent
	for ev := range stream.Events() {
		switch e := ev.(type) {
		case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
			if first.IsZero() {
				first = time.Now()
			}
			got.Write(e.Value.Payload)
		case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
			done = &e.Value
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	if done == nil || aws.ToString(done.ErrorCode) != "" {
		t.Fatalf("InvokeComplete %+v, want a clean end", done)
	}
	if streamed := end.Sub(first); streamed < 700*time.Millisecond {
		t.Errorf("the first chunk came %v before the end, want it while the app still wrote (1 s of chunks to come): buffered?", streamed)
	}
	prelude, body, ok := bytes.Cut(got.Bytes(), make([]byte, 8))
	var p struct {
		StatusCode int               `json:"statusCode"`
		Headers    map[string]string `json:"headers"`
	}
	if !ok || json.Unmarshal(prelude, &p) != nil || p.StatusCode != 200 || !strings.HasPrefix(p.Headers["content-type"], "text/plain") {
		t.Fatalf("prelude %q (cut %v): want status 200 and the app's content type", prelude, ok)
	}
	if n := strings.Count(string(body), "chunk "); n != 3 {
		t.Errorf("body %q: %d chunks, want 3", body, n)
	}
	if tail, _ := base64.StdEncoding.DecodeString(aws.ToString(done.LogResult)); !strings.Contains(string(tail), "FERRY CPU RequestId:") ||
		!strings.Contains(string(tail), "Billed Duration:") {
		t.Errorf("log tail %q: want the invocation's CPU line and REPORT", tail)
	}
}

// A response that breaks off mid-stream ends the stream with Lambda's
// error trailers: the caller has the chunks sent before, then an
// InvokeComplete naming the failure.
func TestStreamedResponseFailing(t *testing.T) {
	client := streamingFunction(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := client.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{
		FunctionName: aws.String("app"), Payload: httpEvent("GET", "/stream", "chunks=2&interval_ms=10&fail=1", nil, nil, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	stream := out.GetStream()
	defer stream.Close()
	var got bytes.Buffer
	var done *types.InvokeWithResponseStreamCompleteEvent
	for ev := range stream.Events() {
		switch e := ev.(type) {
		case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
			got.Write(e.Value.Payload)
		case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
			done = &e.Value
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(got.String(), "chunk "); n != 2 {
		t.Errorf("streamed %q: %d chunks, want the 2 sent before the break", got.String(), n)
	}
	if done == nil || aws.ToString(done.ErrorCode) != "Ferry.ResponseCutShort" {
		t.Errorf("InvokeComplete %+v, want ErrorCode Ferry.ResponseCutShort", done)
	}
}

// Only a Function URL's events stream: one from API Gateway or from
// ferry's router (whose plain invocations send Function URL-shaped events
// for the client's own host) gets the buffered JSON answer it reads.
func TestStreamingOnlyForFunctionURLs(t *testing.T) {
	client := streamingFunction(t)
	event := httpEvent("GET", "/stream", "chunks=2&interval_ms=10", nil, nil, "")
	event = bytes.Replace(event, []byte("abc.lambda-url.us-east-1.on.aws"), []byte("api.example.com"), 1)
	out, err := client.Invoke(t.Context(), &lambda.InvokeInput{FunctionName: aws.String("app"), Payload: event})
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	if err := json.Unmarshal(out.Payload, &resp); err != nil || resp.StatusCode != 200 || strings.Count(resp.Body, "chunk ") != 2 {
		t.Errorf("answer %.200q (%v): want the buffered JSON event with both chunks", out.Payload, err)
	}
}
