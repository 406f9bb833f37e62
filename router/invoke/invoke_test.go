package invoke

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// TestRetryable holds the errors the real SDK returns to what may pass
// when tried again (a throttle, Lambda's 5xx, a connection never made; not
// a 4xx, nor a client that gave up), and to what says the region's Lambda
// is failing rather than one function.
func TestRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	answer := func(status int, kind, reason string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Amzn-Errortype", kind)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(`{"Type":"User","message":"test","Reason":"` + reason + `"}`))
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	// A request that waits for its answer until the client gives up.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	// refused: Lambda turned the call down before invoking anything.
	for _, tc := range []struct {
		name, endpoint             string
		cancel                     bool
		retry, regionWide, refused bool
	}{
		{"nothing listens", closed, false, true, true, false},
		{"the client gave up", hang.URL, true, false, false, false},
		{"throttled: the account's concurrency", answer(429, "TooManyRequestsException", "ConcurrentInvocationLimitExceeded"), false, true, true, true},
		{"throttled: the function's reserved concurrency", answer(429, "TooManyRequestsException", "ReservedFunctionConcurrentInvocationLimitExceeded"), false, true, false, true},
		{"Lambda's own error", answer(500, "ServiceException", ""), false, true, true, false},
		{"an unknown 503", answer(503, "Unavailable", ""), false, true, false, false},
		{"no such function", answer(404, "ResourceNotFoundException", ""), false, false, false, true},
		{"not allowed", answer(403, "AccessDeniedException", ""), false, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String(tc.endpoint), Retryer: aws.NopRetryer{},
				Credentials: aws.AnonymousCredentials{}})
			ctx, cancel := context.WithCancel(context.Background())
			if tc.cancel {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			defer cancel()
			_, err := api.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("app")})
			if err == nil {
				t.Fatal("no error")
			}
			if got := retryable(err); got != tc.retry {
				t.Errorf("retryable(%v) = %v, want %v", err, got, tc.retry)
			}
			if got := refused(err); got != tc.refused {
				t.Errorf("refused(%v) = %v, want %v", err, got, tc.refused)
			}
			if got := retryable(err) && regional(err); got != tc.regionWide {
				t.Errorf("a failure of the region's Lambda: %v, want %v (%v)", got, tc.regionWide, err)
			}
		})
	}
}

// TestTimedOutConnection: a connection that timed out (a dead NAT, a
// dropped SYN) never started the invocation; it is tried again and is the
// region's trouble. Built as the SDK returns it, since a real one needs an
// address that drops packets.
func TestTimedOutConnection(t *testing.T) {
	err := &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{}},
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}}
	if !retryable(err) || !regional(err) {
		t.Errorf("a timed-out connection: retryable %v, regional %v; want both", retryable(err), regional(err))
	}
	if cancel := (&smithy.CanceledError{Err: context.Canceled}); retryable(cancel) || regional(cancel) {
		t.Error("a call its caller gave up on counts against Lambda")
	}
}
