package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/ferryrun/ferry/router/config"
)

// noLambda is a fake Lambda with no functions: every invoke fails at once,
// as Lambda answers for a function that does not exist. The request path
// is under test here, not Lambda.
type noLambda struct{}

func (noLambda) Invoke(context.Context, *lambda.InvokeInput, ...func(*lambda.Options)) (*lambda.InvokeOutput, error) {
	return nil, &lambdatypes.ResourceNotFoundException{Message: aws.String("Function not found")}
}

// FuzzIngress: whatever a client sends as a request (any method, target,
// headers and body that net/http reads), the ingress answers it with a
// status, within its queue timeout, without a panic; a path no route takes
// is 404; and with no instance to be had, never a 2xx.
func FuzzIngress(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n",
		"GET /api/users?id=1 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /api/../admin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"GET /public/..%2Fapi HTTP/1.1\r\nHost: x\r\n\r\n",
		"PUT /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET http://web.example.com/x HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /api HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			config.EnvRoutes: "app=/api,web=web.example.com/", config.EnvTunnelListen: "127.0.0.1:0",
			config.EnvQueueTimeout: "300ms", config.EnvLaunchTimeout: "1s", config.EnvMaxBodyBytes: "65536",
		}[k]
	})
	if err != nil {
		f.Fatal(err)
	}
	r, err := New(cfg, noLambda{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http answers that itself
		}
		req.RemoteAddr = "192.0.2.1:4321"
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.ingress.ServeHTTP(rec, req)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer within 10 s to %q", raw)
		}
		routed := strings.HasPrefix(req.URL.Path, "/api") || strings.EqualFold(strings.Split(req.Host, ":")[0], "web.example.com")
		switch status := rec.Code; {
		case status < 100 || status > 599:
			t.Errorf("status %d for %q", status, raw)
		case status >= 200 && status < 300:
			t.Errorf("%d with no instance to be had, for %q", status, raw)
		case !routed && status != http.StatusNotFound:
			t.Errorf("%d for a request no route takes (%q), want 404", status, raw)
		}
	})
}
