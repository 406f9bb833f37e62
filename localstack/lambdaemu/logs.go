package lambdaemu

import (
	"bytes"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// logPipe copies a sandbox's output pipe into a lineWriter.
type logPipe struct {
	r       *os.File
	fd      int // r's descriptor, for FIONREAD; valid until close
	w       *lineWriter
	copying atomic.Bool   // a read's bytes are being emitted
	eof     chan struct{} // closed when the pipe reached EOF
}

func newLogPipe(r *os.File, w *lineWriter) *logPipe {
	return &logPipe{r: r, fd: int(r.Fd()), w: w, eof: make(chan struct{})}
}

// copy runs until EOF, when every process holding the write end is gone.
func (p *logPipe) copy() {
	defer close(p.eof)
	buf := make([]byte, 32<<10)
	for {
		n, err := p.r.Read(buf)
		if n > 0 {
			p.copying.Store(true)
			p.w.Write(buf[:n])
			p.copying.Store(false)
		}
		if err != nil {
			p.w.flush()
			return
		}
	}
}

// settle waits, at most 50ms, until everything written to the pipe so far
// has been emitted: nothing is left unread and no read is being emitted, on
// two checks a millisecond apart (a read may have just returned).
func (p *logPipe) settle() {
	quiet := 0
	for deadline := time.Now().Add(50 * time.Millisecond); quiet < 2 && time.Now().Before(deadline); {
		select {
		case <-p.eof:
			return
		default:
		}
		n, err := unix.IoctlGetInt(p.fd, unix.TIOCINQ) // FIONREAD
		if err != nil {
			return
		}
		if n == 0 && !p.copying.Load() {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(time.Millisecond)
	}
}

// close waits for EOF, at most a second (an orphaned grandchild may hold
// the write end), then closes the pipe.
func (p *logPipe) close() {
	select {
	case <-p.eof:
	case <-time.After(time.Second):
	}
	p.r.Close()
}

// lineWriter splits a process's output into lines for emit. Lines longer
// than 64 KB are emitted in pieces.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > 64<<10 {
				w.emit(string(w.buf))
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.emit(string(bytes.TrimRight(w.buf[:i], "\r")))
		w.buf = w.buf[i+1:]
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = nil
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) WriteString(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, s...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
