package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

// crc32c is a bitwise CRC-32C, written apart from the code under test so
// that the test pins the format rather than repeating it.
func crc32c(t *testing.T, s string) string {
	t.Helper()
	c := ^uint32(0)
	for i := 0; i < len(s); i++ {
		c ^= uint32(s[i])
		for k := 0; k < 8; k++ {
			if c&1 != 0 {
				c = c>>1 ^ 0x82f63b78
			} else {
				c >>= 1
			}
		}
	}
	return fmt.Sprintf("%08x", ^c)
}

// logRecorder collects JSON log lines.
type logRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logRecorder) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(l, nil)) }

// line returns the first record whose msg contains msg, or nil.
func (l *logRecorder) line(t *testing.T, msg string) map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, raw := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(raw), &rec) == nil && strings.Contains(fmt.Sprint(rec["msg"]), msg) {
			return rec
		}
	}
	return nil
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var other = codec.State{Version: 1, RegistryHash: 0xdeadbeef, FeatureFlags: 1, TerminalMode: 3, Rows: 40, Cols: 120}

func TestFileFormatGolden(t *testing.T) {
	want := "regedge-state 2 0x01a1b2c3d40000000702185000 crc32c:16ed925e\n"
	if got := string(encodeFile(codec.DefaultState())); got != want {
		t.Fatalf("encodeFile(default) = %q, want %q", got, want)
	}
	if crc32c(t, "regedge-state 2 0x01a1b2c3d40000000702185000") != "16ed925e" {
		t.Fatal("the test's own CRC-32C disagrees with the golden line")
	}
	st, format, err := decodeFile([]byte(want))
	if err != nil || format != 2 || st != codec.DefaultState() {
		t.Fatalf("decode golden: %v %d %v", st, format, err)
	}
}

// Every single changed byte of a state file is refused, whatever the
// change: that is what the checksum and the strict layout are for.
func TestEveryChangedByteIsRefused(t *testing.T) {
	good := encodeFile(other)
	dir := t.TempDir()
	for i := range good {
		for _, mask := range []byte{0x01, 0x02, 0x20, 0x80, 0xff} {
			b := bytes.Clone(good)
			b[i] ^= mask
			file := filepath.Join(dir, fmt.Sprintf("state-%d-%02x", i, mask))
			if err := os.WriteFile(file, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(Options{Initial: codec.DefaultState(), File: file})
			var ce *CorruptError
			if !errors.Is(err, ErrCorruptFile) || !errors.As(err, &ce) || !strings.Contains(err.Error(), file) {
				t.Fatalf("byte %d ^ %#02x (%q): Open = %v, %v; want a corrupt-file error naming %s", i, mask, b, s, err, file)
			}
		}
	}
	// Truncations and additions too.
	for _, b := range [][]byte{good[:len(good)-1], good[:10], append(bytes.Clone(good), '\n'), append([]byte(" "), good...), nil} {
		file := filepath.Join(dir, "state-len")
		os.WriteFile(file, b, 0o600)
		if _, err := Open(Options{Initial: codec.DefaultState(), File: file}); !errors.Is(err, ErrCorruptFile) {
			t.Fatalf("%q: Open = %v, want ErrCorruptFile", b, err)
		}
	}
}

func TestFormat1IsMigrated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(file, []byte(other.Dump()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logRecorder
	s, err := Open(Options{Initial: codec.DefaultState(), File: file, Log: logs.logger()})
	if err != nil || s.State() != other {
		t.Fatalf("format 1: %v, %v; want %v", s, err, other)
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, encodeFile(other)) {
		t.Fatalf("after the migration the file holds %q", b)
	}
	if rec := logs.line(t, "format 1 (no checksum)"); rec == nil || rec["file"] != file {
		t.Fatalf("the migration is not in the log:\n%s", logs.String())
	}
	if rec := logs.line(t, "overrides the config file"); rec == nil || rec["state"] != other.Dump() {
		t.Fatalf("the override is not in the log:\n%s", logs.String())
	}
}

// openWithin runs Open and fails the test if it does not return: a state
// file that is a FIFO used to block the agent before it listened.
func openWithin(t *testing.T, opts Options) (*Store, error) {
	t.Helper()
	type result struct {
		s   *Store
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := Open(opts)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("Open(%s) is blocked", opts.File)
		return nil, nil
	}
}

func TestOnlyARegularFileIsRead(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Lets a reader that blocked on the FIFO (the old code) go at the end.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	sub := filepath.Join(dir, "dir")
	os.Mkdir(sub, 0o755)
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dev := filepath.Join(dir, "dev")
	if err := os.Symlink("/dev/null", dev); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		fifo: "a named pipe (FIFO)", sub: "a directory", sock: "a socket", dev: "a character device",
	} {
		t.Run(want, func(t *testing.T) {
			for _, src := range []StateSource{StateSourceFile, StateSourceConfig} {
				s, err := openWithin(t, Options{Initial: codec.DefaultState(), File: path, Source: src})
				var fe *FileError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
					t.Errorf("%s (source %s): Open = %v, %v; want an error naming it as %s", path, src, s, err, want)
				}
			}
		})
	}
	if _, err := os.Lstat(fifo); err != nil {
		t.Fatalf("the FIFO is gone: %v", err)
	}
}

func TestDanglingSymlinkIsAnError(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "state")
	os.Symlink(filepath.Join(dir, "missing", "state"), link)
	for _, src := range []StateSource{StateSourceFile, StateSourceConfig} {
		s, err := Open(Options{Initial: codec.DefaultState(), File: link, Source: src})
		var fe *FileError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), link) || !strings.Contains(err.Error(), "dangling symlink") {
			t.Fatalf("source %s: Open = %v, %v; want an error naming the dangling symlink", src, s, err)
		}
	}
}

func TestSymlinkWritesGoToItsTarget(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real")
	os.WriteFile(target, encodeFile(other), 0o600)
	link := filepath.Join(dir, "state")
	os.Symlink(target, link)
	s, err := Open(Options{Initial: codec.DefaultState(), File: link})
	if err != nil || s.State() != other {
		t.Fatalf("Open = %v, %v", s, err)
	}
	f := codec.Update(codec.FieldRows, 50)
	got, err := s.Apply(&f, SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(target); !bytes.Equal(b, encodeFile(got)) {
		t.Fatalf("target holds %q", b)
	}
}

func TestStateSource(t *testing.T) {
	t.Run("file wins by default, logged", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "state")
		os.WriteFile(file, encodeFile(other), 0o600)
		var logs logRecorder
		s, err := Open(Options{Initial: codec.DefaultState(), File: file, Log: logs.logger()})
		if err != nil || s.State() != other {
			t.Fatalf("Open = %v, %v; want the file's %v", s, err, other)
		}
		rec := logs.line(t, "state file overrides the config file's config section")
		if rec == nil || rec["state"] != other.Dump() || rec["config"] != codec.DefaultState().Dump() || rec["file"] != file {
			t.Fatalf("no override line:\n%s", logs.String())
		}
	})
	t.Run("config wins and is written", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "state")
		os.WriteFile(file, encodeFile(other), 0o600)
		var logs logRecorder
		s, err := Open(Options{Initial: codec.DefaultState(), File: file, Source: StateSourceConfig, Log: logs.logger()})
		if err != nil || s.State() != codec.DefaultState() {
			t.Fatalf("Open = %v, %v; want the config's state", s, err)
		}
		if b, _ := os.ReadFile(file); !bytes.Equal(b, encodeFile(codec.DefaultState())) {
			t.Fatalf("the file holds %q, want the config's state", b)
		}
		if rec := logs.line(t, "overrides the state file"); rec == nil || rec["file_state"] != other.Dump() {
			t.Fatalf("no override line:\n%s", logs.String())
		}
	})
	t.Run("corrupt file refused with source file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "state")
		b := encodeFile(other)
		b[20] ^= 1
		os.WriteFile(file, b, 0o600)
		_, err := Open(Options{Initial: codec.DefaultState(), File: file, Source: StateSourceFile})
		if !errors.Is(err, ErrCorruptFile) || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "checksum mismatch") {
			t.Fatalf("Open = %v", err)
		}
		if got, _ := os.ReadFile(file); !bytes.Equal(got, b) {
			t.Fatal("a refused file was changed")
		}
	})
	t.Run("corrupt file set aside with source config", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "state")
		b := encodeFile(other)
		b[20] ^= 1
		os.WriteFile(file, b, 0o600)
		var logs logRecorder
		now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
		s, err := Open(Options{Initial: codec.DefaultState(), File: file, Source: StateSourceConfig, Log: logs.logger(),
			Now: func() time.Time { return now }})
		if err != nil || s.State() != codec.DefaultState() {
			t.Fatalf("Open = %v, %v", s, err)
		}
		aside := file + ".corrupt-20261130T080000.000Z"
		if got, err := os.ReadFile(aside); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("set aside: %q, %v", got, err)
		}
		if got, _ := os.ReadFile(file); !bytes.Equal(got, encodeFile(codec.DefaultState())) {
			t.Fatalf("the new file holds %q", got)
		}
		rec := logs.line(t, "state file is corrupt")
		if rec == nil || rec["level"] != "ERROR" || rec["set_aside_as"] != aside || !strings.Contains(fmt.Sprint(rec["err"]), "checksum") {
			t.Fatalf("not said loudly:\n%s", logs.String())
		}
	})
	t.Run("bad source", func(t *testing.T) {
		if _, err := Open(Options{Initial: codec.DefaultState(), Source: "disk"}); err == nil {
			t.Fatal("source disk accepted")
		}
	})
}

// A change that cannot be persisted is a storage error, changes nothing
// (memory, kernel, file, subscribers, counters) and is logged with its door.
func TestWriteFailureIsStorageAndChangesNothing(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "state")
	k := &recordingKernel{}
	var logs logRecorder
	s, err := Open(Options{Initial: codec.DefaultState(), File: file, Kernel: k, Log: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan codec.State, 1)
	defer s.Subscribe(ch)()
	// A state directory that cannot be created: its parent is a file (the
	// portable form of "not writable": root ignores permission bits).
	blocker := filepath.Join(dir, "blocker")
	os.WriteFile(blocker, nil, 0o600)
	s.file = filepath.Join(blocker, "state")
	before := s.State()
	f := codec.Update(codec.FieldRows, 41)
	got, err := s.Apply(&f, SourceBus)
	var se *StorageError
	if !errors.Is(err, ErrStorage) || !errors.As(err, &se) || se.Word() != "storage" {
		t.Fatalf("Apply = %v, %v; want a *StorageError", got, err)
	}
	if errors.Is(err, ErrCorruptFile) || errors.Is(err, codec.ErrValue) || errors.Is(err, ErrNotAllowed) {
		t.Fatalf("a storage error matches a refusal: %v", err)
	}
	if got != before || s.State() != before || k.states[len(k.states)-1] != before {
		t.Fatalf("half applied: returned %v, state %v, kernel %v", got, s.State(), k.states)
	}
	select {
	case st := <-ch:
		t.Fatalf("subscriber told of %v", st)
	default:
	}
	rec := logs.line(t, "the state file could not be written")
	if rec == nil || rec["level"] != "ERROR" || rec["source"] != "bus" {
		t.Fatalf("not logged:\n%s", logs.String())
	}
	// Fixed: the same change goes through.
	s.file = file
	if got, err = s.Apply(&f, SourceBus); err != nil || got.Rows != 41 {
		t.Fatalf("after the fix: %v, %v", got, err)
	}
}

func TestStorageWords(t *testing.T) {
	for errno, want := range map[syscall.Errno]string{
		syscall.ENOSPC: "nospace", syscall.EDQUOT: "quota", syscall.EROFS: "readonly",
		syscall.EACCES: "denied", syscall.EPERM: "denied", syscall.EIO: "io", syscall.ENOTDIR: "storage",
	} {
		t.Run(errno.Error(), func(t *testing.T) {
			e := &StorageError{Path: "/x", Op: "write", Err: &os.PathError{Op: "write", Path: "/x", Err: errno}}
			if got := e.Word(); got != want || len(got) > 8 {
				t.Errorf("%v: %q, want %q", errno, got, want)
			}
		})
	}
}
