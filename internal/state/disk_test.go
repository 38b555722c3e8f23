//go:build linux

package state

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

// tinyTmpfs mounts a tmpfs of 64 KiB on a new directory (root), unmounted
// at the end.
func tinyTmpfs(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("regedge-test", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0755"); err != nil {
		testutil.SkipOrFail(t, "mount a tmpfs: "+err.Error())
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// A full disk and a read-only one, on a real filesystem: storage errors
// with their own words; nothing changes; the first change after the disk
// has room again goes through.
func TestFullAndReadOnlyDisk(t *testing.T) {
	dir := tinyTmpfs(t)
	file := filepath.Join(dir, "state")
	k := &recordingKernel{}
	s, err := Open(Options{Initial: codec.DefaultState(), File: file, Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	f := codec.Update(codec.FieldRows, 30)
	first, err := s.Apply(&f, SourceWS)
	if err != nil {
		t.Fatal(err)
	}
	// Fill the filesystem.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0xaa}, 4096)
	for i := 0; ; i++ {
		if _, err := filler.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filling: %v", err)
			}
			break
		}
		if i > 1<<10 {
			t.Fatal("a 64 KiB tmpfs took 4 MiB")
		}
	}
	filler.Close()
	g := codec.Update(codec.FieldRows, 31)
	_, err = s.Apply(&g, SourceWS)
	var se *StorageError
	if !errors.As(err, &se) || se.Word() != "nospace" {
		t.Fatalf("full disk: %v; want a storage error \"nospace\"", err)
	}
	if s.State() != first || k.states[len(k.states)-1] != first {
		t.Fatalf("full disk: state %v, kernel %v", s.State(), k.states[len(k.states)-1])
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, encodeFile(first)) {
		t.Fatalf("full disk: the file holds %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("full disk: left behind %v", ents)
	}
	os.Remove(filepath.Join(dir, "filler"))
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	_, err = s.Apply(&g, SourceWS)
	if !errors.As(err, &se) || se.Word() != "readonly" {
		t.Fatalf("read-only disk: %v; want a storage error \"readonly\"", err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT, ""); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Apply(&g, SourceWS); err != nil || got.Rows != 31 {
		t.Fatalf("disk back: %v, %v", got, err)
	}
}
