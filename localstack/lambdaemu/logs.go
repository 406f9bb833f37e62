package lambdaemu

import (
	"bytes"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// logPipe copies a sandbox's output pipe into a lineWriter.
type logPipe struct {
	r   *os.File
	w   *lineWriter
	eof chan struct{} // closed when the pipe reached EOF

	// mu is held across each read from the pipe and the emitting of what
	// it read, so settle, holding it, sees every byte either still in the
	// pipe or already emitted: never in between.
	mu sync.Mutex
}

func newLogPipe(r *os.File, w *lineWriter) *logPipe {
	return &logPipe{r: r, w: w, eof: make(chan struct{})}
}

// copy runs until EOF, when every process holding the write end is gone.
func (p *logPipe) copy() {
	defer close(p.eof)
	defer p.w.flush()
	rc, err := p.r.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			for {
				n, rerr = unix.Read(int(fd), buf)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				return false // wait until readable, then call again
			}
			if n > 0 {
				p.w.Write(buf[:n])
			}
			return true
		})
		if err != nil || rerr != nil || n <= 0 {
			return // n == 0: EOF
		}
	}
}

// settle waits, at most 50ms, until everything written to the pipe so far
// has been emitted.
func (p *logPipe) settle() {
	rc, err := p.r.SyscallConn()
	if err != nil {
		return
	}
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		select {
		case <-p.eof:
			return
		default:
		}
		var n int
		var ierr error
		p.mu.Lock()
		cerr := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }) // FIONREAD
		p.mu.Unlock()
		if cerr != nil || ierr != nil || n == 0 {
			return
		}
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
