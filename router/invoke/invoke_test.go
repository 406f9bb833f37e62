package invoke

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// TestRetryable holds the errors the real SDK returns to what may pass
// when tried again: a throttle, Lambda's 5xx, no answer at all; and not a
// 4xx, which will not.
func TestRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	answer := func(status int, kind string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Amzn-Errortype", kind)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(`{"Type":"User","message":"test"}`))
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	for _, tc := range []struct {
		name, endpoint string
		want           bool
	}{
		{"nothing listens", closed, true},
		{"throttled", answer(429, "TooManyRequestsException"), true},
		{"Lambda's own error", answer(500, "ServiceException"), true},
		{"an unknown 503", answer(503, "Unavailable"), true},
		{"no such function", answer(404, "ResourceNotFoundException"), false},
		{"not allowed", answer(403, "AccessDeniedException"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String(tc.endpoint), Retryer: aws.NopRetryer{},
				Credentials: aws.AnonymousCredentials{}})
			_, err := api.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("app")})
			if err == nil {
				t.Fatal("no error")
			}
			if got := retryable(err); got != tc.want {
				t.Errorf("retryable(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
}
