package direct

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// StreamContentType is the content type of a streamed Function URL
// response (InvokeMode RESPONSE_STREAM): a JSON prelude with the status,
// headers and cookies, eight NUL bytes, then the body.
const StreamContentType = "application/vnd.awslambda.http-integration-response"

// FromFunctionURL reports whether a request of Kind HTTPv2 came through a
// Lambda Function URL (its host is the URL's, <id>.lambda-url.<region>.on.aws,
// even behind CloudFront), the only source that can take a streamed
// response: API Gateway and ferry's router read a buffered one.
func FromFunctionURL(r *http.Request) bool {
	return strings.Contains(r.Host, ".lambda-url.")
}

// Streamer is an http.ResponseWriter that writes a handler's response as
// Lambda's streamed HTTP integration response, each write going out as the
// handler makes it.
type Streamer struct {
	w      io.Writer
	header http.Header
	wrote  bool
	err    error
}

// NewStreamer returns a Streamer writing to w.
func NewStreamer(w io.Writer) *Streamer { return &Streamer{w: w, header: http.Header{}} }

// Header returns the response headers, sent with the first write.
func (s *Streamer) Header() http.Header { return s.header }

// WriteHeader sends the prelude with code (informational codes are not
// sent: a streamed response has one status).
func (s *Streamer) WriteHeader(code int) {
	if s.wrote || (code >= 100 && code < 200) {
		return
	}
	s.wrote = true
	prelude := struct {
		StatusCode int               `json:"statusCode"`
		Headers    map[string]string `json:"headers,omitempty"`
		Cookies    []string          `json:"cookies,omitempty"`
	}{StatusCode: code, Headers: map[string]string{}}
	for k, vs := range s.header {
		if http.CanonicalHeaderKey(k) == "Set-Cookie" {
			prelude.Cookies = append(prelude.Cookies, vs...)
			continue
		}
		prelude.Headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	b, _ := json.Marshal(prelude)
	_, s.err = s.w.Write(append(b, make([]byte, 8)...))
}

// Write sends p, after the prelude (status 200 if none was set).
func (s *Streamer) Write(p []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	s.err = err
	return n, err
}

// Flush sends the prelude if it has not gone yet; the writes themselves go
// out as they are made.
func (s *Streamer) Flush() { s.WriteHeader(http.StatusOK) }

// Close sends the prelude of a response that wrote nothing.
func (s *Streamer) Close() { s.WriteHeader(http.StatusOK) }
