package tunnel

import "golang.org/x/net/http2"

// StreamErrorForTest builds the error x/net/http2 returns for an RST_STREAM.
func StreamErrorForTest(id uint32, code string) error {
	c := map[string]http2.ErrCode{"REFUSED_STREAM": http2.ErrCodeRefusedStream, "INTERNAL_ERROR": http2.ErrCodeInternal}[code]
	return http2.StreamError{StreamID: id, Code: c}
}
