// Command inprocess shows ferry's in-process mode for Go: build this as
// your function's `bootstrap` (provided.al2023, no layer needed) and your
// http.Handler serves both ferry's tunnels and ordinary HTTP events.
//
//	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -o bootstrap ./examples/inprocess
package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/ferryrun/ferry/bootstrap/serve"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			name = "world"
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hello, %s, from one process\n", name)
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(100 * time.Millisecond):
			fmt.Fprintln(w, "done")
		case <-r.Context().Done():
		}
	})
	// Work after the answer: the invocation lasts until it is done.
	var later atomic.Int64
	mux.HandleFunc("GET /later", func(w http.ResponseWriter, r *http.Request) {
		serve.WaitUntil(r.Context(), func(ctx context.Context) {
			select {
			case <-time.After(200 * time.Millisecond):
				later.Add(1)
			case <-ctx.Done(): // the drain before the deadline
			}
		})
		fmt.Fprintln(w, "answered; the rest follows")
	})
	mux.HandleFunc("GET /later/done", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, later.Load())
	})
	// A WebSocket: ferry hands an in-process handler the upgrade over an
	// in-memory connection.
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			c.Write(r.Context(), typ, msg)
		}
	})
	serve.Start(mux)
}
