package userproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Idle timeouts for what the proxy carries without looking at it: CONNECT
// tunnels and clients' request bodies. Neither may hold a connection (and
// its goroutines) once nothing moves.

// pipeIdle copies both ways between a and b until both directions ended,
// or nothing moved either way for idle; it returns the bytes copied. A
// direction that waits while the other moves is not idle: a download
// through a tunnel sends nothing upstream for minutes.
func pipeIdle(a, b net.Conn, idle time.Duration) int64 {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	copied := make(chan int64, 2)
	pipe := func(dst, src net.Conn) {
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		var n int64
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			k, err := src.Read(*buf)
			if k > 0 {
				last.Store(time.Now().UnixNano())
				dst.SetWriteDeadline(time.Now().Add(idle))
				w, werr := dst.Write((*buf)[:k])
				n += int64(w)
				if werr != nil {
					break
				}
			}
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction is moving
				}
				break
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite() // the other direction ends with its own error
		} else {
			dst.Close()
		}
		copied <- n
	}
	go pipe(b, a)
	go pipe(a, b)
	first := <-copied
	// One direction ended: the other gets at most idle more to finish.
	return first + <-copied
}

// idleClientBody is a request body whose every read may wait at most idle
// for data. At the body's end the connection's read deadline is cleared:
// net/http reads the connection in the background after that (to see the
// client leave), and a deadline firing there would cancel the request
// while it waits for the upstream's answer. After a failed read it stays:
// net/http tries to read what is left of a body after the handler (to
// keep the connection), which must fail too, not wait.
type idleClientBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	done atomic.Bool // the transport may Close while another goroutine reads
}

func (b *idleClientBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return b.ReadCloser.Read(p)
	}
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.done.CompareAndSwap(false, true) && err == io.EOF {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// Close before the end (the upstream answered early): what net/http reads
// of the rest gets the same bound.
func (b *idleClientBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	return b.ReadCloser.Close()
}
