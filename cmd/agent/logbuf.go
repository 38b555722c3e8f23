package main

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// logWriter buffers log lines and writes them out every 100 ms (and on
// Close): one access line per request would otherwise cost a write system
// call per request, a tenth of the proxy's CPU under load (pprof). At most
// the last 100 ms of lines are lost if the process is killed.
type logWriter struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func newLogWriter(w io.Writer) *logWriter {
	l := &logWriter{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.flush()
			case <-l.stop:
				l.flush()
				return
			}
		}
	}()
	return l
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *logWriter) flush() {
	l.mu.Lock()
	_ = l.w.Flush() // stderr is gone: there is nowhere left to say so
	l.mu.Unlock()
}

// Close flushes what is buffered and stops the flusher.
func (l *logWriter) Close() {
	close(l.stop)
	<-l.done
}
