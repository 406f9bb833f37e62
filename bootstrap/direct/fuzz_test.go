package direct

import (
	"context"
	"encoding/json"
	"io"
	"testing"
)

// FuzzEvent: any direct invocation event becomes a request or an error,
// never a panic, and the response to a request that parsed is JSON of the
// event's kind.
func FuzzEvent(f *testing.F) {
	for _, e := range []string{
		`{"version":"2.0","rawPath":"/a%20b","rawQueryString":"x=1","cookies":["s=1"],"headers":{"host":"h"},"body":"aGVsbG8=","isBase64Encoded":true,"requestContext":{"http":{"method":"PUT","path":"/a b","sourceIp":"203.0.113.1"}}}`,
		`{"httpMethod":"GET","path":"/p","multiValueQueryStringParameters":{"a":["1","2"]},"multiValueHeaders":{"X":["1","2"]},"requestContext":{"stage":"prod","identity":{"sourceIp":"198.51.100.2"}}}`,
		`{"httpMethod":"POST","path":"/alb","queryStringParameters":{"q":"a%20b"},"headers":{"host":"lb"},"body":"{}","requestContext":{"elb":{"targetGroupArn":"arn:tg"}}}`,
		`{"version":"1.0","httpMethod":"GET","path":"/v1","requestContext":{}}`,
		`{"version":"2.0","requestContext":{"http":{}}}`,
		`{"httpMethod":"GET","path":"","body":"%%%","isBase64Encoded":true,"requestContext":{"elb":{}}}`,
		`{}`, `null`, `[]`,
	} {
		f.Add([]byte(e))
	}
	f.Fuzz(func(t *testing.T, event []byte) {
		req, kind, multi, err := Request(context.Background(), event)
		if err != nil {
			return
		}
		if req == nil || req.URL == nil {
			t.Fatalf("no request and no error for %s", event)
		}
		body, _ := io.ReadAll(req.Body)
		rec := NewRecorder()
		rec.Header().Set("Set-Cookie", "a=1")
		rec.Header().Add("Set-Cookie", "b=2")
		rec.WriteHeader(200)
		rec.Write(body)
		out, err := Response(kind, multi, rec)
		if err != nil {
			return // over the limit
		}
		if !json.Valid(out) {
			t.Fatalf("response is not JSON: %s", out)
		}
	})
}
