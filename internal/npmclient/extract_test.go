package npmclient

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
)

type entry = npmfixture.Entry

// hostile is every tarball shape Extract must refuse.
var hostile = []struct {
	name    string
	entries []entry
	want    string
}{
	{"dot-dot path", []entry{{Name: "package/../../evil", Type: tar.TypeReg, Body: "x"}}, "climbs out"},
	{"dot-dot at the top", []entry{{Name: "../evil", Type: tar.TypeReg, Body: "x"}}, "climbs out"},
	{"absolute path", []entry{{Name: "/tmp/evil", Type: tar.TypeReg, Body: "x"}}, "absolute path"},
	{"windows drive", []entry{{Name: "C:/evil", Type: tar.TypeReg, Body: "x"}}, "absolute path"},
	{"backslash", []entry{{Name: "package\\..\\evil", Type: tar.TypeReg, Body: "x"}}, "absolute path"},
	{"absolute link", []entry{{Name: "package/l", Type: tar.TypeSymlink, Linkname: "/etc"}}, "absolute path /etc"},
	{"link climbing out", []entry{{Name: "package/l", Type: tar.TypeSymlink, Linkname: "../../x"}}, "links outside"},
	// a link to the package root, then ".." through it, reads as inside
	// but is not; refused for its "..".
	{"link to root then up", []entry{
		{Name: "package/root", Type: tar.TypeSymlink, Linkname: "."},
		{Name: "package/up", Type: tar.TypeSymlink, Linkname: "root/.."},
	}, "links outside"},
	// a file written through an earlier link must stay inside
	{"write through a link to a sibling dir", []entry{
		{Name: "package/l", Type: tar.TypeSymlink, Linkname: "sub/deeper"},
		{Name: "package/l/x", Type: tar.TypeReg, Body: "x"},
	}, "unsafe tarball"},
	{"hard link", []entry{{Name: "package/h", Type: tar.TypeLink, Linkname: "/etc/passwd"}}, "not a file, directory or link"},
	{"device", []entry{{Name: "package/dev", Type: tar.TypeChar}}, "not a file, directory or link"},
	{"fifo", []entry{{Name: "package/fifo", Type: tar.TypeFifo}}, "not a file, directory or link"},
	{"duplicate file", []entry{
		{Name: "package/a", Type: tar.TypeReg, Body: "1"},
		{Name: "package/a", Type: tar.TypeReg, Body: "2"},
	}, "file exists"},
	{"oversized entry", []entry{{Name: "package/big", Type: tar.TypeReg, Body: strings.Repeat("b", 2048)}}, "over the 1024 limit"},
}

func TestExtractRefusesHostileTarballs(t *testing.T) {
	defer func(old int64) { MaxEntrySize = old }(MaxEntrySize)
	MaxEntrySize = 1024
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "node_modules", "pkg")
			os.MkdirAll(filepath.Dir(dir), 0o755)
			err := Extract(bytes.NewReader(npmfixture.RawTarball(tc.entries)), dir)
			if !errors.Is(err, ErrUnsafeTarball) {
				t.Fatalf("err = %v, want ErrUnsafeTarball", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
			// nothing written: the target is gone and its parents hold
			// nothing but the empty node_modules we made.
			var left []string
			filepath.Walk(parent, func(p string, _ os.FileInfo, _ error) error {
				left = append(left, p)
				return nil
			})
			if len(left) != 2 {
				t.Fatalf("left behind: %v", left)
			}
		})
	}
}

func TestExtractRefusesTooManyEntriesAndJunk(t *testing.T) {
	defer func(old int) { MaxEntries = old }(MaxEntries)
	MaxEntries = 3
	var many []entry
	for _, n := range []string{"a", "b", "c", "d"} {
		many = append(many, entry{Name: "package/" + n, Type: tar.TypeReg, Body: n})
	}
	dir := filepath.Join(t.TempDir(), "p")
	if err := Extract(bytes.NewReader(npmfixture.RawTarball(many)), dir); !errors.Is(err, ErrUnsafeTarball) || !strings.Contains(err.Error(), "more than 3 entries") {
		t.Fatalf("many entries: %v", err)
	}
	for name, data := range map[string][]byte{
		"not gzip":  []byte("plain text"),
		"truncated": npmfixture.Tarball(map[string]string{"a": strings.Repeat("x", 5000)})[:60],
	} {
		if err := Extract(bytes.NewReader(data), dir); !errors.Is(err, ErrUnsafeTarball) {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%s: %s left behind", name, dir)
		}
	}
}

func TestExtractWritesAPackage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	tgz := npmfixture.RawTarball([]entry{
		{Name: "package/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "package/package.json", Type: tar.TypeReg, Body: `{"name":"p"}`},
		{Name: "package/bin/cli.js", Type: tar.TypeReg, Body: "#!/usr/bin/env node\n", Mode: 0o755},
		{Name: "package/lib/index.js", Type: tar.TypeReg, Body: "module.exports = 1\n"},
		{Name: "package/index.js", Type: tar.TypeSymlink, Linkname: "lib/index.js"},
	})
	if err := Extract(bytes.NewReader(tgz), dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.js"))
	if err != nil || string(b) != "module.exports = 1\n" {
		t.Fatalf("index.js through its link: %q %v", b, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/cli.js"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("bin/cli.js: %v %v", fi, err)
	}
	if err := Extract(bytes.NewReader(tgz), dir); err == nil {
		t.Fatal("extracting over an existing directory must fail")
	}
}

func FuzzExtract(f *testing.F) {
	for _, tc := range hostile {
		f.Add(npmfixture.RawTarball(tc.entries))
	}
	f.Add(npmfixture.Tarball(map[string]string{"package.json": "{}", "a/b/c.js": "x"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "p")
		if err := Extract(bytes.NewReader(data), dir); err != nil {
			if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
				t.Fatalf("error %v left %s behind", err, dir)
			}
			return
		}
		// whatever was written stays under dir
		entries, _ := os.ReadDir(parent)
		if len(entries) != 1 {
			t.Fatalf("wrote beside the package: %v", entries)
		}
	})
}
