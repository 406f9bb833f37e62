package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// A plain invocation carries one request as a Function URL event (payload
// 2.0) and its answer as the response event, exactly as a Function URL
// would: the bootstrap serves it as it serves any direct invocation.

// plainEligible reports whether req can travel in an invoke payload and be
// answered whole in the result: a small body already in memory, and
// nothing that needs a live connection (upgrades, event streams, gRPC,
// trailers).
func plainEligible(req *http.Request, body *replayBody) bool {
	if body.streams() || req.Method == http.MethodConnect || len(req.Trailer) > 0 {
		return false
	}
	if req.Header.Get("Upgrade") != "" || strings.Contains(strings.ToLower(req.Header.Get("Te")), "trailers") {
		return false
	}
	if strings.Contains(req.Header.Get("Accept"), "text/event-stream") ||
		strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc") {
		return false
	}
	return true
}

// plainUnsafeBytes: a response larger than this sends the function's
// requests back to tunnels for a while (Lambda's limit is 6 MB).
const plainUnsafeBytes = 1 << 20

// plainUnsafe reports whether a response that came through a tunnel could
// not have come whole in an invoke result: too large, an event stream,
// trailers, or a body without a length that kept coming for a while.
func plainUnsafe(resp *http.Response, bytes int64, took time.Duration) bool {
	return bytes > plainUnsafeBytes || len(resp.Trailer) > 0 ||
		strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") ||
		(resp.ContentLength < 0 && took > 250*time.Millisecond)
}

// plainEvent encodes req, whose body is b, as a Function URL event.
func plainEvent(req *http.Request, b []byte, clientAddr string) ([]byte, error) {
	headers := make(map[string]string, len(req.Header)+1)
	for k, vs := range req.Header {
		if k == "Cookie" {
			continue
		}
		headers[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	headers["host"] = req.Host
	var cookies []string
	for _, c := range req.Header.Values("Cookie") {
		for _, part := range strings.Split(c, ";") {
			if part = strings.TrimSpace(part); part != "" {
				cookies = append(cookies, part)
			}
		}
	}
	ip := clientAddr
	if h, _, err := net.SplitHostPort(clientAddr); err == nil {
		ip = h
	}
	now := time.Now()
	ev := events.LambdaFunctionURLRequest{
		Version:        "2.0",
		RawPath:        req.URL.EscapedPath(),
		RawQueryString: req.URL.RawQuery,
		Cookies:        cookies,
		Headers:        headers,
		RequestContext: events.LambdaFunctionURLRequestContext{
			RequestID:  strconv.FormatInt(now.UnixNano(), 36),
			DomainName: req.Host,
			Time:       now.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch:  now.UnixMilli(),
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{
				Method: req.Method, Path: req.URL.Path, Protocol: "HTTP/1.1",
				SourceIP: ip, UserAgent: req.Header.Get("User-Agent"),
			},
		},
	}
	if len(b) > 0 {
		ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(b), true
	}
	return json.Marshal(ev)
}

// errBadPlainResponse: the invoke result was not an HTTP response event.
var errBadPlainResponse = errors.New("the function's answer to a plain invocation was not an HTTP response")

// plainResponse decodes a Function URL response event.
func plainResponse(req *http.Request, payload []byte) (*http.Response, error) {
	var ev events.LambdaFunctionURLResponse
	if err := json.Unmarshal(payload, &ev); err != nil || ev.StatusCode < 100 || ev.StatusCode > 999 {
		return nil, errBadPlainResponse
	}
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadPlainResponse, err)
		}
	}
	h := make(http.Header, len(ev.Headers)+1)
	for k, v := range ev.Headers {
		h.Set(k, v)
	}
	for _, c := range ev.Cookies {
		h.Add("Set-Cookie", c)
	}
	n := int64(len(body))
	if req.Method == http.MethodHead {
		// The app's length of the body it would send.
		n = -1
	} else {
		h.Del("Content-Length") // the body's own length stands
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", ev.StatusCode, http.StatusText(ev.StatusCode)), StatusCode: ev.StatusCode,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: n, Request: req,
	}, nil
}
