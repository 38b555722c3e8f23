package logging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSinkNeverWaitsForAStalledReader: a pipe nobody reads fills up; the
// writers go on at once, the lines that do not fit are counted.
func TestSinkNeverWaitsForAStalledReader(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	s := NewSink(w, 64<<10)
	line := []byte(strings.Repeat("x", 255) + "\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 2000; i++ { // 4 MiB in all: far beyond the pipe and the buffer
					if n, err := s.Write(line); n != len(line) || err != nil {
						t.Errorf("Write: %d %v", n, err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("writers were held by a reader that does not read")
	}
	if d := promtest.ToFloat64(s.Collector()); d == 0 {
		t.Fatal("nothing counted as dropped")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a reader that does not read")
	}
}

// TestSinkDeliversEveryLineInOrder with a reader that keeps up.
func TestSinkDeliversEveryLineInOrder(t *testing.T) {
	r, w, _ := os.Pipe()
	defer r.Close()
	s := NewSink(w, 1<<20)
	got := make(chan []string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		got <- lines
	}()
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(s, "line %d\n", i)
	}
	s.Close()
	w.Close()
	lines := <-got
	if len(lines) != 5000 || promtest.ToFloat64(s.Collector()) != 0 {
		t.Fatalf("%d lines, %v dropped", len(lines), promtest.ToFloat64(s.Collector()))
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d is %q", i, l)
		}
	}
	if n, _ := s.Write([]byte("late\n")); n != 5 || promtest.ToFloat64(s.Collector()) != 1 {
		t.Fatal("a line after Close is dropped and counted")
	}
}

func TestRingKeepsTheLastBytes(t *testing.T) {
	r := NewRing(100)
	for i := 0; i < 50; i++ {
		fmt.Fprintf(r, "line %02d\n", i) // 8 bytes
	}
	got := string(r.Bytes())
	if len(got) > 100 || !strings.HasSuffix(got, "line 49\n") || !strings.HasPrefix(got, "line 38\n") {
		t.Fatalf("ring: %q", got)
	}
	r.Write(bytes.Repeat([]byte("y"), 200)) // longer than the ring: not kept
	if string(r.Bytes()) != got {
		t.Fatal("an oversized line changed the ring")
	}
}

func TestRepeatedWarningsAreRateLimited(t *testing.T) {
	var buf bytes.Buffer
	h := RateLimit(slog.NewJSONHandler(&buf, nil), 10*time.Second)
	now := time.Unix(1000, 0)
	h.(*rateLimited).lim.now = func() time.Time { return now }
	log := slog.New(h).With("component", "test")
	for i := 0; i < 100; i++ {
		log.Warn("upstream failed", "i", i)
		log.Info("request", "i", i)
	}
	log.Error("upstream failed") // another level: its own limit
	now = now.Add(11 * time.Second)
	log.Warn("upstream failed", "i", 100)
	var warns, infos, errs int
	var last map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		switch m["level"] {
		case "WARN":
			warns++
			last = m
		case "INFO":
			infos++
		case "ERROR":
			errs++
		}
	}
	if warns != 2 || infos != 100 || errs != 1 || last["suppressed"] != float64(99) || last["component"] != "test" {
		t.Fatalf("warns %d infos %d errors %d, last %v", warns, infos, errs, last)
	}
}

func TestParseLevelAndAccess(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want slog.Level
		ok   bool
	}{{"debug", slog.LevelDebug, true}, {"INFO", slog.LevelInfo, true}, {"warn", slog.LevelWarn, true}, {"error", slog.LevelError, true}, {"trace", 0, false}, {"", 0, false}} {
		got, err := ParseLevel(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLevel(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{{"on", 1, true}, {"off", -1, true}, {"sample:1", 1, true}, {"sample:100", 100, true},
		{"sample:0", 0, false}, {"sample:-2", 0, false}, {"sample:", 0, false}, {"sample:x", 0, false}, {"On", 0, false}, {"", 0, false}} {
		got, err := ParseAccess(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseAccess(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func FuzzParseAccess(f *testing.F) {
	for _, s := range []string{"on", "off", "sample:10", "sample:-1", "sample:99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseAccess(s)
		if err == nil && n != -1 && n < 1 {
			t.Fatalf("%q accepted as %d", s, n)
		}
	})
}

func TestOutputKeepsLoggerLinesInTheRing(t *testing.T) {
	var buf syncBuf
	o := New(&buf, slog.LevelWarn, 0)
	o.Logger.Info("not at this level")
	o.Logger.Warn("kept")
	o.Sink.Write([]byte(`{"msg":"request"}` + "\n")) // an access line: the sink only
	o.Level.Set(slog.LevelDebug)
	o.Logger.Debug("now debug")
	o.Close()
	ring := string(o.Ring.Bytes())
	if strings.Contains(ring, "not at this level") || !strings.Contains(ring, `"msg":"kept"`) || strings.Contains(ring, "request") || !strings.Contains(ring, "now debug") {
		t.Fatalf("ring: %s", ring)
	}
	if out := buf.String(); !strings.Contains(out, "request") || !strings.Contains(out, "kept") {
		t.Fatalf("output: %s", out)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
