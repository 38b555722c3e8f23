package npmclient

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits on what one tarball may unpack to (variables so tests can lower them).
var (
	MaxEntrySize   int64 = 256 << 20 // bytes in one file
	MaxPackageSize int64 = 1 << 30   // bytes in the whole package
	MaxEntries           = 100000
)

// ErrUnsafeTarball is the error of every tarball refused for its shape.
var ErrUnsafeTarball = errors.New("unsafe tarball")

// Extract unpacks an npm tarball (gzip, tar, one leading directory such as
// package/) into dir, which must not exist yet. It refuses absolute paths,
// paths leaving dir, links that point outside the package, special files
// and oversized entries; on any error dir is removed, so nothing is left.
func Extract(r io.Reader, dir string) error {
	parent, err := os.OpenRoot(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer parent.Close()
	return extractAt(r, parent, filepath.Base(dir))
}

// extractAt is Extract into parent/name, every write confined to parent.
func extractAt(r io.Reader, parent *os.Root, name string) (err error) {
	if err := parent.Mkdir(name, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, parent.RemoveAll(name))
		}
	}()
	// os.Root confines every write below to the package directory, whatever
	// links earlier entries made; the checks on names and link targets come
	// first so the error says what was wrong with the tarball.
	root, err := parent.OpenRoot(name)
	if err != nil {
		return err
	}
	defer root.Close()
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: not gzip: %v", ErrUnsafeTarball, err)
	}
	tr := tar.NewReader(gz)
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnsafeTarball, err)
		}
		if n >= MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrUnsafeTarball, MaxEntries)
		}
		rel, err := entryPath(h.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue // the leading directory itself
		}
		target := filepath.FromSlash(rel)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrUnsafeTarball, h.Name, err)
			}
		case tar.TypeReg:
			if h.Size < 0 || h.Size > MaxEntrySize {
				return fmt.Errorf("%w: %s: %d bytes, over the %d limit", ErrUnsafeTarball, h.Name, h.Size, MaxEntrySize)
			}
			if total += h.Size; total > MaxPackageSize {
				return fmt.Errorf("%w: over %d bytes in all", ErrUnsafeTarball, MaxPackageSize)
			}
			if err := root.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrUnsafeTarball, h.Name, err)
			}
			mode := os.FileMode(0o644)
			if h.Mode&0o111 != 0 {
				mode = 0o755
			}
			f, err := root.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrUnsafeTarball, h.Name, err)
			}
			_, cerr := io.Copy(f, io.LimitReader(tr, h.Size))
			if err := f.Close(); cerr == nil {
				cerr = err
			}
			if cerr != nil {
				return cerr
			}
		case tar.TypeSymlink:
			// A link may point only inside the package.
			if path.IsAbs(h.Linkname) {
				return fmt.Errorf("%w: %s links to the absolute path %s", ErrUnsafeTarball, h.Name, h.Linkname)
			}
			// ".." is refused outright: through a link to the package root
			// it climbs out even when the text of the path does not.
			for _, part := range strings.Split(h.Linkname, "/") {
				if part == ".." {
					return fmt.Errorf("%w: %s links outside the package (%s)", ErrUnsafeTarball, h.Name, h.Linkname)
				}
			}
			if err := root.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrUnsafeTarball, h.Name, err)
			}
			if err := root.Symlink(h.Linkname, target); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrUnsafeTarball, h.Name, err)
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
			continue
		default:
			return fmt.Errorf("%w: %s: entry type %q is not a file, directory or link", ErrUnsafeTarball, h.Name, h.Typeflag)
		}
	}
}

// entryPath strips the leading directory (package/ in npm tarballs) and
// refuses absolute paths and any path that climbs out.
func entryPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || (len(name) > 1 && name[1] == ':') {
		return "", fmt.Errorf("%w: absolute path %q", ErrUnsafeTarball, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: path %q climbs out", ErrUnsafeTarball, name)
		}
	}
	clean := path.Clean(name)
	if i := strings.IndexByte(clean, '/'); i >= 0 {
		return clean[i+1:], nil
	}
	return "", nil // the leading directory (or a file at the top, which npm ignores)
}
