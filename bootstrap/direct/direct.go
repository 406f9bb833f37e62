// Package direct turns an ordinary Lambda HTTP event (Function URL, API
// Gateway HTTP API v2, API Gateway REST v1, ALB) into one HTTP request, and
// the app's response into the matching response event, so a function with
// ferry's layer still works when invoked without the router.
package direct

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// Kind is the shape of an event.
type Kind int

const (
	Unknown Kind = iota
	HTTPv2       // Function URL or API Gateway HTTP API, payload 2.0
	RESTv1       // API Gateway REST API, or HTTP API payload 1.0
	ALB          // Application Load Balancer target group
)

// MaxResponseBytes is Lambda's limit on a synchronous response, which the
// encoded event must fit in.
const MaxResponseBytes = 6 << 20

// ErrUnknownEvent is returned for an event of no known HTTP shape.
var ErrUnknownEvent = errors.New("event is neither a ferry dial-back nor an HTTP event (Function URL, API Gateway v1/v2, ALB)")

type probe struct {
	Version        string          `json:"version"`
	HTTPMethod     string          `json:"httpMethod"`
	RequestContext json.RawMessage `json:"requestContext"`
	MultiValue     json.RawMessage `json:"multiValueHeaders"`
}

type probeContext struct {
	HTTP *struct{} `json:"http"`
	ELB  *struct{} `json:"elb"`
}

// Request parses event into an HTTP request with ctx. For ALB events,
// multiValue reports whether the target group uses multi-value headers, which
// the response must then use too.
func Request(ctx context.Context, event []byte) (req *http.Request, kind Kind, multiValue bool, err error) {
	var p probe
	if err := json.Unmarshal(event, &p); err != nil {
		return nil, Unknown, false, ErrUnknownEvent
	}
	var rc probeContext
	json.Unmarshal(p.RequestContext, &rc)
	switch {
	case p.Version == "2.0" && rc.HTTP != nil:
		var e events.APIGatewayV2HTTPRequest
		if err := json.Unmarshal(event, &e); err != nil {
			return nil, HTTPv2, false, fmt.Errorf("decoding v2 event: %w", err)
		}
		req, err = fromV2(ctx, &e)
		return req, HTTPv2, false, err
	case p.HTTPMethod != "" && rc.ELB != nil:
		var e events.ALBTargetGroupRequest
		if err := json.Unmarshal(event, &e); err != nil {
			return nil, ALB, false, fmt.Errorf("decoding ALB event: %w", err)
		}
		mv := len(e.MultiValueHeaders) > 0 || len(e.MultiValueQueryStringParameters) > 0
		req, err = fromALB(ctx, &e)
		return req, ALB, mv, err
	case p.HTTPMethod != "":
		var e events.APIGatewayProxyRequest
		if err := json.Unmarshal(event, &e); err != nil {
			return nil, RESTv1, false, fmt.Errorf("decoding v1 event: %w", err)
		}
		req, err = fromV1(ctx, &e)
		return req, RESTv1, false, err
	}
	return nil, Unknown, false, ErrUnknownEvent
}

func body(s string, b64 bool) ([]byte, error) {
	if !b64 {
		return []byte(s), nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decoding base64 body: %w", err)
	}
	return b, nil
}

func newRequest(ctx context.Context, method, path, rawQuery string, b []byte) (*http.Request, error) {
	if path == "" {
		path = "/"
	}
	u := &url.URL{Scheme: "http", Host: "lambda", RawQuery: rawQuery}
	if err := setPath(u, path); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.ContentLength = int64(len(b))
	return req, nil
}

func setPath(u *url.URL, raw string) error {
	p, err := url.PathUnescape(raw)
	if err != nil {
		return fmt.Errorf("bad path %q: %w", raw, err)
	}
	u.Path, u.RawPath = p, raw
	return nil
}

func fromV2(ctx context.Context, e *events.APIGatewayV2HTTPRequest) (*http.Request, error) {
	b, err := body(e.Body, e.IsBase64Encoded)
	if err != nil {
		return nil, err
	}
	path := e.RawPath
	if path == "" {
		path = e.RequestContext.HTTP.Path
	}
	req, err := newRequest(ctx, e.RequestContext.HTTP.Method, path, e.RawQueryString, b)
	if err != nil {
		return nil, err
	}
	for k, v := range e.Headers {
		// v2 joins repeated headers with commas; keep them joined.
		req.Header.Set(k, v)
	}
	if len(e.Cookies) > 0 {
		req.Header.Set("Cookie", strings.Join(e.Cookies, "; "))
	}
	finish(req, e.RequestContext.DomainName, e.RequestContext.HTTP.SourceIP)
	return req, nil
}

func fromV1(ctx context.Context, e *events.APIGatewayProxyRequest) (*http.Request, error) {
	b, err := body(e.Body, e.IsBase64Encoded)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for k, vs := range e.MultiValueQueryStringParameters {
		q[k] = vs
	}
	for k, v := range e.QueryStringParameters {
		if _, ok := q[k]; !ok {
			q.Set(k, v)
		}
	}
	req, err := newRequest(ctx, e.HTTPMethod, e.Path, q.Encode(), b)
	if err != nil {
		return nil, err
	}
	setHeaders(req.Header, e.Headers, e.MultiValueHeaders)
	finish(req, e.RequestContext.DomainName, e.RequestContext.Identity.SourceIP)
	return req, nil
}

func fromALB(ctx context.Context, e *events.ALBTargetGroupRequest) (*http.Request, error) {
	b, err := body(e.Body, e.IsBase64Encoded)
	if err != nil {
		return nil, err
	}
	// ALB passes query parameters as the client sent them, still encoded.
	var parts []string
	for k, vs := range e.MultiValueQueryStringParameters {
		for _, v := range vs {
			parts = append(parts, k+"="+v)
		}
	}
	if len(parts) == 0 {
		for k, v := range e.QueryStringParameters {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	req, err := newRequest(ctx, e.HTTPMethod, e.Path, strings.Join(parts, "&"), b)
	if err != nil {
		return nil, err
	}
	setHeaders(req.Header, e.Headers, e.MultiValueHeaders)
	finish(req, "", "")
	return req, nil
}

func setHeaders(h http.Header, single map[string]string, multi map[string][]string) {
	for k, vs := range multi {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	for k, v := range single {
		if _, ok := h[http.CanonicalHeaderKey(k)]; !ok {
			h.Set(k, v)
		}
	}
}

func finish(req *http.Request, domain, sourceIP string) {
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	} else if domain != "" {
		req.Host = domain
	}
	if sourceIP != "" {
		req.RemoteAddr = sourceIP + ":0"
		if req.Header.Get("X-Forwarded-For") == "" {
			req.Header.Set("X-Forwarded-For", sourceIP)
		}
	}
}

// Response encodes the recorded response as the event kind expects. The
// limit is on the encoded payload, as Lambda's is: a binary body grows by a
// third in base64.
func Response(kind Kind, multiValue bool, rec *Recorder) ([]byte, error) {
	if rec.overflow {
		return nil, fmt.Errorf("response body over %d bytes, Lambda's limit for a direct invocation", MaxResponseBytes)
	}
	out, err := response(kind, multiValue, rec)
	if err == nil && len(out) > MaxResponseBytes {
		return nil, fmt.Errorf("response payload of %d bytes (body, encoded, and headers) over %d, Lambda's limit for a direct invocation", len(out), MaxResponseBytes)
	}
	return out, err
}

func response(kind Kind, multiValue bool, rec *Recorder) ([]byte, error) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	b64 := isBinary(rec.header.Get("Content-Type"), rec.body.Bytes())
	bodyStr := rec.body.String()
	if b64 {
		bodyStr = base64.StdEncoding.EncodeToString(rec.body.Bytes())
	}
	h := rec.header.Clone()
	switch kind {
	case HTTPv2:
		cookies := h.Values("Set-Cookie")
		h.Del("Set-Cookie")
		return json.Marshal(events.APIGatewayV2HTTPResponse{
			StatusCode: status, Headers: joined(h), Cookies: cookies, Body: bodyStr, IsBase64Encoded: b64,
		})
	case RESTv1:
		return json.Marshal(events.APIGatewayProxyResponse{
			StatusCode: status, MultiValueHeaders: h, Body: bodyStr, IsBase64Encoded: b64,
		})
	case ALB:
		r := events.ALBTargetGroupResponse{
			StatusCode: status, StatusDescription: fmt.Sprintf("%d %s", status, http.StatusText(status)),
			Body: bodyStr, IsBase64Encoded: b64,
		}
		if multiValue {
			r.MultiValueHeaders = h
		} else {
			cookies := h.Values("Set-Cookie")
			h.Del("Set-Cookie")
			r.Headers = joined(h)
			// One value per header name, and cookies cannot be joined
			// with commas: each goes under its own spelling of the name
			// (HTTP names are case-insensitive; the balancer passes each).
			for i, c := range cookies {
				r.Headers[caseVariant("set-cookie", i)] = c
			}
		}
		return json.Marshal(r)
	}
	return nil, ErrUnknownEvent
}

// caseVariant returns name (lower case, letters and '-') with its letters'
// case set by the bits of i: variant 0 is name itself, each i another
// spelling, up to 2^letters of them.
func caseVariant(name string, i int) string {
	b := []byte(name)
	for j := range b {
		if b[j] >= 'a' && b[j] <= 'z' {
			if i&1 == 1 {
				b[j] -= 'a' - 'A'
			}
			i >>= 1
		}
	}
	return string(b)
}

func joined(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	return out
}

// isBinary reports whether a body must travel base64-encoded: anything not
// declared as text, or not valid UTF-8.
func isBinary(contentType string, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	text := strings.HasPrefix(mt, "text/") || mt == "" ||
		strings.HasSuffix(mt, "json") || strings.HasSuffix(mt, "xml") ||
		mt == "application/javascript" || mt == "application/x-www-form-urlencoded"
	return !text || !utf8.Valid(b)
}

// Recorder is an http.ResponseWriter that keeps the response in memory, up
// to MaxResponseBytes.
type Recorder struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	overflow bool
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{header: http.Header{}} }

func (r *Recorder) Header() http.Header { return r.header }

func (r *Recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *Recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	if r.body.Len()+len(p) > MaxResponseBytes {
		r.overflow = true
		return 0, errors.New("response too large for a direct invocation")
	}
	return r.body.Write(p)
}

// Overflowed reports whether a write went past MaxResponseBytes.
func (r *Recorder) Overflowed() bool { return r.overflow }

// Flush does nothing: a direct response is sent whole.
func (r *Recorder) Flush() {}
