package state

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/regedge/regedge/internal/codec"
)

// The state file, format 2, is one line:
//
//	regedge-state 2 0x01a1b2c3d40000000702185000 crc32c:3f4e6a1b\n
//
// a magic word, the format number, the dump (docs/protocol.md §4.1, lowercase)
// and the CRC-32C (Castagnoli) of everything before " crc32c:", in 8
// lowercase hex digits. The line is parsed strictly (single spaces, one
// trailing newline, nothing else), so that any one changed byte is
// refused: in the magic, the number or the layout as a parse error, in the
// dump or the checksum as a mismatch.
//
// Format 1, the dump alone on a line, is what regedge wrote before the
// checksum: it is still read (a migration), and rewritten in format 2.
const (
	fileMagic      = "regedge-state"
	fileFormat     = 2
	fileSumPrefix  = " crc32c:"
	maxStateFile   = 512 // far more than either format needs; bounds the read
	formatLegacy   = 1
	corruptPattern = ".corrupt-" // <file>.corrupt-<UTC time>: a corrupt file set aside
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeFile returns the format 2 line for st.
func encodeFile(st codec.State) []byte {
	body := fmt.Sprintf("%s %d %s", fileMagic, fileFormat, st.Dump())
	return fmt.Appendf(nil, "%s%s%08x\n", body, fileSumPrefix, crc32.Checksum([]byte(body), castagnoli))
}

// decodeFile parses a state file's bytes and returns the state and the
// format it was in. A failure is a *CorruptError without Path (the caller
// knows it).
func decodeFile(b []byte) (codec.State, int, error) {
	if len(b) > maxStateFile {
		return codec.State{}, 0, &CorruptError{Reason: fmt.Sprintf("%d bytes: more than a state file ever holds", len(b))}
	}
	s := string(b)
	if !strings.HasPrefix(s, fileMagic) {
		// Format 1: a dump, the surrounding whitespace as written.
		st, err := codec.ParseDump(strings.TrimSpace(s))
		if err != nil {
			return codec.State{}, 0, &CorruptError{Reason: "neither a format 2 line nor a dump", Err: err}
		}
		return st, formatLegacy, nil
	}
	line, ok := strings.CutSuffix(s, "\n")
	if !ok || strings.ContainsAny(line, "\r\n\t") {
		return codec.State{}, 0, &CorruptError{Reason: "not one line ending in a newline"}
	}
	body, sum, ok := strings.Cut(line, fileSumPrefix)
	if !ok {
		return codec.State{}, 0, &CorruptError{Reason: "no checksum"}
	}
	parts := strings.Split(body, " ")
	if len(parts) != 3 || parts[0] != fileMagic {
		return codec.State{}, 0, &CorruptError{Reason: "want \"regedge-state FORMAT DUMP crc32c:SUM\""}
	}
	if parts[1] != fmt.Sprint(fileFormat) {
		return codec.State{}, 0, &CorruptError{Reason: fmt.Sprintf("format %q: this build reads formats 1 and 2 (written by a newer regedge?)", parts[1])}
	}
	if len(sum) != 8 || strings.Trim(sum, "0123456789abcdef") != "" {
		return codec.State{}, 0, &CorruptError{Reason: fmt.Sprintf("checksum %q: want 8 lowercase hex digits", sum)}
	}
	if want := fmt.Sprintf("%08x", crc32.Checksum([]byte(body), castagnoli)); sum != want {
		return codec.State{}, 0, &CorruptError{Reason: fmt.Sprintf("checksum mismatch: the file says crc32c:%s, its content gives crc32c:%s", sum, want)}
	}
	st, err := codec.ParseDump(parts[2])
	if err != nil {
		return codec.State{}, 0, &CorruptError{Reason: "the dump", Err: err}
	}
	if st.Dump() != parts[2] {
		return codec.State{}, 0, &CorruptError{Reason: "the dump is not in lowercase"}
	}
	return st, fileFormat, nil
}

// readFile reads the state file at path. It returns os.ErrNotExist (wrapped)
// when there is no file, a *FileError for a path that cannot hold a state
// (not a regular file, a dangling symlink, unreadable), and a *CorruptError
// for a regular file whose bytes are not a state. target is the path writes
// go to: the symlink's target when path is a symlink, so that the link
// stays.
//
// Nothing here may block: a FIFO is recognised by its mode before it is
// opened, and opened (if it got there between the two checks) with
// O_NONBLOCK and checked again on the open descriptor.
func readFile(path string) (st codec.State, format int, target string, err error) {
	target = path
	li, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return st, 0, target, err
		}
		return st, 0, target, &FileError{Path: path, Err: err}
	}
	if li.Mode()&fs.ModeSymlink != 0 {
		resolved, err := filepath.EvalSymlinks(path)
		if err != nil {
			link, _ := os.Readlink(path)
			if errors.Is(err, fs.ErrNotExist) {
				// Not wrapping err: a dangling link must not pass for "no
				// state file yet" and a silent start from the config.
				return st, 0, target, &FileError{Path: path, Problem: fmt.Sprintf("is a dangling symlink (to %q, which does not exist)", link)}
			}
			return st, 0, target, &FileError{Path: path, Problem: fmt.Sprintf("is a symlink (to %q) that cannot be followed", link), Err: err}
		}
		target = resolved
	}
	fi, err := os.Stat(path)
	if err != nil {
		return st, 0, target, &FileError{Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return st, 0, target, &FileError{Path: path, Problem: "is " + kind(fi.Mode()) + ", not a regular file"}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return st, 0, target, &FileError{Path: path, Err: err}
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return st, 0, target, &FileError{Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return st, 0, target, &FileError{Path: path, Problem: "is " + kind(fi.Mode()) + ", not a regular file"}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return st, 0, target, &FileError{Path: path, Err: err}
	}
	st, format, err = decodeFile(b)
	if err != nil {
		ce := err.(*CorruptError)
		ce.Path = path
		return st, 0, target, ce
	}
	return st, format, target, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file (mode " + m.String() + ")"
}

// FileError says why agent.stateFile names something that cannot hold a
// state: not a regular file, a dangling symlink, or a read that failed.
// The agent does not start.
type FileError struct {
	Path    string
	Problem string // plain words; "" when Err says it all
	Err     error
}

func (e *FileError) Error() string {
	switch {
	case e.Problem != "":
		return fmt.Sprintf("state: agent.stateFile %s %s", e.Path, e.Problem)
	default:
		return fmt.Sprintf("state: agent.stateFile %s: %v", e.Path, e.Err)
	}
}

func (e *FileError) Unwrap() error { return e.Err }

// CorruptError is a state file whose bytes are not a valid state. It
// matches ErrCorruptFile.
type CorruptError struct {
	Path   string
	Reason string
	Err    error
}

func (e *CorruptError) Error() string {
	msg := fmt.Sprintf("%v: %s: %s", ErrCorruptFile, e.Path, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *CorruptError) Unwrap() []error { return []error{ErrCorruptFile, e.Err} }

// StorageError is a change that was valid but could not be persisted: the
// state directory is not writable, the disk is full, the disk failed. It
// matches ErrStorage; receivers answer it with ERROR code 6 (storage) or
// HTTP 507, and a sender retries.
type StorageError struct {
	Path string
	Op   string // what failed: "create", "write", "fsync", "rename", ...
	Err  error
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("state: not persisted: %s %s: %v", e.Op, e.Path, e.Err)
}

func (e *StorageError) Unwrap() []error { return []error{ErrStorage, e.Err} }

// Word is the 8-byte-or-shorter message of the ERROR frame that answers the
// change: the kind of storage trouble, for the sender's table.
func (e *StorageError) Word() string {
	switch {
	case errors.Is(e.Err, syscall.ENOSPC):
		return "nospace"
	case errors.Is(e.Err, syscall.EDQUOT):
		return "quota"
	case errors.Is(e.Err, syscall.EROFS):
		return "readonly"
	case errors.Is(e.Err, syscall.EACCES), errors.Is(e.Err, syscall.EPERM):
		return "denied"
	case errors.Is(e.Err, syscall.EIO):
		return "io"
	}
	return "storage"
}

// writeFileAtomic writes data to path through a temp file in the same
// directory: write, fsync, rename, fsync the directory. Every failure
// before the rename leaves path as it was and is a *StorageError.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return &StorageError{Path: dir, Op: "create directory", Err: err}
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return &StorageError{Path: dir, Op: "create a temp file in", Err: err}
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // nothing to remove after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return &StorageError{Path: tmp, Op: "write", Err: err}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return &StorageError{Path: tmp, Op: "fsync", Err: err}
	}
	if err := f.Close(); err != nil {
		return &StorageError{Path: tmp, Op: "close", Err: err}
	}
	if err := os.Rename(tmp, path); err != nil {
		return &StorageError{Path: path, Op: "rename into", Err: err}
	}
	// After the rename the new state is what the file says; a failed
	// directory fsync only weakens durability across a power cut, and
	// reporting it would leave the file and the answer disagreeing.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
