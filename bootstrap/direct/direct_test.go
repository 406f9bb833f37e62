package direct

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestRequest(t *testing.T) {
	cases := map[string]struct {
		event                   string
		kind                    Kind
		method, url, host, body string
		header, headerValue     string
	}{
		"function url with base64 body and cookies": {
			event: `{"version":"2.0","rawPath":"/a%20b","rawQueryString":"x=1&y=%2F","cookies":["s=1","t=2"],
				"headers":{"host":"h.example","content-type":"text/plain"},"body":"aGVsbG8=","isBase64Encoded":true,
				"requestContext":{"http":{"method":"PUT","path":"/a b","sourceIp":"203.0.113.1"}}}`,
			kind: HTTPv2, method: "PUT", url: "http://lambda/a%20b?x=1&y=%2F", host: "h.example", body: "hello",
			header: "Cookie", headerValue: "s=1; t=2",
		},
		"rest v1 prefers multi-value query and headers": {
			event: `{"httpMethod":"GET","path":"/p","queryStringParameters":{"a":"last"},"multiValueQueryStringParameters":{"a":["1","2"]},
				"multiValueHeaders":{"X-Multi":["m1","m2"]},"requestContext":{"stage":"prod","identity":{"sourceIp":"198.51.100.2"}}}`,
			kind: RESTv1, method: "GET", url: "http://lambda/p?a=1&a=2", header: "X-Forwarded-For", headerValue: "198.51.100.2",
		},
		"alb keeps the query as sent": {
			event: `{"httpMethod":"POST","path":"/alb","queryStringParameters":{"q":"a%20b"},"headers":{"host":"lb.example"},
				"body":"{}","requestContext":{"elb":{"targetGroupArn":"arn:tg"}}}`,
			kind: ALB, method: "POST", url: "http://lambda/alb?q=a%20b", host: "lb.example", body: "{}",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			req, kind, _, err := Request(context.Background(), []byte(c.event))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(req.Body)
			if kind != c.kind || req.Method != c.method || req.URL.String() != c.url || string(b) != c.body {
				t.Errorf("got %v %s %s body %q; want %v %s %s body %q", kind, req.Method, req.URL, b, c.kind, c.method, c.url, c.body)
			}
			if c.host != "" && req.Host != c.host {
				t.Errorf("Host = %q, want %q", req.Host, c.host)
			}
			if c.header != "" && req.Header.Get(c.header) != c.headerValue {
				t.Errorf("%s = %q, want %q", c.header, req.Header.Get(c.header), c.headerValue)
			}
		})
	}
	for _, bad := range []string{`{"hello":1}`, `not json`, `{"version":"2.0","rawPath":"/","isBase64Encoded":true,"body":"***","requestContext":{"http":{"method":"GET"}}}`} {
		if _, _, _, err := Request(context.Background(), []byte(bad)); err == nil {
			t.Errorf("Request(%s) succeeded", bad)
		}
	}
}

func TestResponse(t *testing.T) {
	cases := map[string]struct {
		contentType string
		body        string
		wantB64     bool
	}{
		"json is text":          {"application/json", `{"a":1}`, false},
		"html is text":          {"text/html; charset=utf-8", "<p>hi</p>", false},
		"octet-stream is bytes": {"application/octet-stream", "abc", true},
		"invalid utf-8 text":    {"text/plain", "\xff\xfe", true},
		"no type, plain text":   {"", "hello", false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rec := NewRecorder()
			rec.Header().Set("Content-Type", c.contentType)
			rec.Header().Add("Set-Cookie", "a=1")
			rec.Header().Add("Set-Cookie", "b=2")
			rec.WriteHeader(201)
			io.WriteString(rec, c.body)
			out, err := Response(HTTPv2, false, rec)
			if err != nil {
				t.Fatal(err)
			}
			var v2 struct {
				StatusCode      int
				Cookies         []string
				Headers         map[string]string
				IsBase64Encoded bool
			}
			json.Unmarshal(out, &v2)
			if v2.StatusCode != 201 || v2.IsBase64Encoded != c.wantB64 || strings.Join(v2.Cookies, ",") != "a=1,b=2" || v2.Headers["set-cookie"] != "" {
				t.Errorf("v2 response %s", out)
			}
		})
	}
}

func TestResponseTooLarge(t *testing.T) {
	rec := NewRecorder()
	rec.Write(make([]byte, MaxResponseBytes))
	if _, err := rec.Write([]byte("x")); err == nil {
		t.Error("write past the limit succeeded")
	}
	if _, err := Response(HTTPv2, false, rec); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("Response error = %v, want the size limit", err)
	}
}

// ALB without multi-value headers: one value per name, so each cookie goes
// under its own spelling of Set-Cookie instead of a comma-joined value no
// browser parses.
func TestALBSingleValueCookies(t *testing.T) {
	rec := NewRecorder()
	rec.Header().Add("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT")
	rec.Header().Add("Set-Cookie", "b=2")
	rec.Header().Add("Set-Cookie", "c=3")
	rec.Header().Set("X-Other", "x")
	out, err := Response(ALB, false, rec)
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ Headers map[string]string }
	json.Unmarshal(out, &r)
	var cookies []string
	for k, v := range r.Headers {
		if strings.EqualFold(k, "Set-Cookie") {
			cookies = append(cookies, v)
		}
	}
	slices.Sort(cookies)
	if want := []string{"a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2", "c=3"}; !slices.Equal(cookies, want) {
		t.Errorf("cookies %q, want %q (headers %v)", cookies, want, r.Headers)
	}
	if r.Headers["x-other"] != "x" {
		t.Errorf("headers %v", r.Headers)
	}
}

// The limit is on the payload Lambda carries: a binary body just under 6 MB
// is 8 MB once base64-encoded.
func TestEncodedResponseTooLarge(t *testing.T) {
	rec := NewRecorder()
	rec.Header().Set("Content-Type", "application/octet-stream")
	rec.Write(make([]byte, MaxResponseBytes-1000))
	if _, err := Response(HTTPv2, false, rec); err == nil || !strings.Contains(err.Error(), "payload") {
		t.Errorf("Response error = %v, want the payload limit", err)
	}
}
