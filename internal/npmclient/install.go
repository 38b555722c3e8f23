package npmclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Installed is what an install wrote.
type Installed struct {
	Packages []string            // name@version of every package written, in path order
	Direct   map[string]*Version // each requested name as installed (absent when skipped)
	Skipped  []string            // optional dependencies left out, and why
}

// Install resolves, downloads, verifies and unpacks specs into
// dir/node_modules. Everything is staged in a directory of dir and moved
// into place at the end: on any failure node_modules is as it was. Every
// write goes through an os.Root (the project directory for the staging
// directory and the final moves, the staging directory for the packages),
// so no name, link or path from a registry can reach outside.
func (c *Client) Install(ctx context.Context, dir string, specs []Spec, log io.Writer) (*Installed, error) {
	p := newPlanner(ctx, c)
	for {
		root, err := p.plan(specs)
		if err != nil {
			return nil, err
		}
		res, err := c.write(ctx, dir, root, log)
		var of *optionalFailure
		if errors.As(err, &of) {
			if err := p.exclude(of); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		res.Skipped = p.skipped
		for _, s := range p.skipped {
			fmt.Fprintln(log, s)
		}
		return res, nil
	}
}

// write fetches and unpacks the tree into a staging directory of dir and
// moves it into dir/node_modules. A failure of a package only an optional
// dependency needs is an optionalFailure.
func (c *Client) write(ctx context.Context, dir string, root *node, log io.Writer) (*Installed, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	project, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer project.Close()
	stage, err := makeStage(project)
	if err != nil {
		return nil, err
	}
	defer func() { _ = project.RemoveAll(stage) }() // a leftover hidden staging directory harms nothing
	staged, err := project.OpenRoot(stage)
	if err != nil {
		return nil, err
	}
	defer staged.Close()

	res := &Installed{Direct: map[string]*Version{}}
	for _, n := range flatten(root) {
		if err := staged.MkdirAll(path.Dir(n.path), 0o755); err != nil {
			return nil, err
		}
		if n.link != nil {
			rel, err := filepath.Rel(path.Dir(n.path), n.link.path)
			if err != nil {
				return nil, err
			}
			if err := staged.Symlink(filepath.ToSlash(rel), n.path); err != nil {
				return nil, err
			}
			fmt.Fprintf(log, "linked %s -> %s (a cycle)\n", n.path, n.link.path)
			continue
		}
		tgz, err := c.Tarball(ctx, n.v)
		if err == nil {
			if err = extractAt(bytes.NewReader(tgz), staged, n.path); err != nil {
				err = fmt.Errorf("%s@%s: %w", n.pkg, n.v.Version, err)
			}
		}
		if err != nil {
			if b := blame(n); b != nil {
				return nil, &optionalFailure{edge: b, err: err}
			}
			return nil, err
		}
		fmt.Fprintf(log, "fetched %s@%s (%d bytes, integrity ok) -> %s\n", n.pkg, n.v.Version, len(tgz), n.path)
		res.Packages = append(res.Packages, n.pkg+"@"+n.v.Version)
		if n.parent == root {
			res.Direct[n.name] = n.v
		}
	}
	if len(root.children) > 0 {
		if err := moveIntoPlace(project, path.Join(stage, "node_modules"), "node_modules", stage); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// makeStage makes a fresh staging directory in the project.
func makeStage(project *os.Root) (string, error) {
	for range 100 {
		var b [6]byte
		rand.Read(b[:])
		name := ".regedge-install-" + hex.EncodeToString(b[:])
		err := project.Mkdir(name, 0o700)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", errors.New("cannot make a staging directory")
}

// moveIntoPlace moves every package of staged into dst (created if
// missing), replacing packages of the same name; scoped packages move one by
// one so the rest of a scope stays. On failure the packages already replaced
// are put back. All paths are in root; the replaced packages wait in
// backups until the end.
func moveIntoPlace(root *os.Root, staged, dst, backups string) error {
	var names []string // relative to staged: "a", "@s/b"
	entries, err := fs.ReadDir(root.FS(), staged)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "@") {
			names = append(names, e.Name())
			continue
		}
		scoped, err := fs.ReadDir(root.FS(), path.Join(staged, e.Name()))
		if err != nil {
			return err
		}
		for _, s := range scoped {
			names = append(names, e.Name()+"/"+s.Name())
		}
	}
	type move struct{ name, backup string }
	var moved []move
	// rollback puts back what was there before; what it could not put
	// back is part of the error, so the caller knows node_modules is mixed.
	rollback := func() error {
		var errs []error
		for i := len(moved) - 1; i >= 0; i-- {
			m := moved[i]
			errs = append(errs, root.RemoveAll(path.Join(dst, m.name)))
			if m.backup != "" {
				errs = append(errs, root.Rename(m.backup, path.Join(dst, m.name)))
			}
		}
		return errors.Join(errs...)
	}
	for i, name := range names {
		target := path.Join(dst, name)
		if err := root.MkdirAll(path.Dir(target), 0o755); err != nil {
			return errors.Join(err, rollback())
		}
		m := move{name: name}
		if _, err := root.Lstat(target); err == nil {
			m.backup = path.Join(backups, fmt.Sprintf("old-%d", i))
			if err := root.Rename(target, m.backup); err != nil {
				return errors.Join(err, rollback())
			}
		}
		if err := root.Rename(path.Join(staged, name), target); err != nil {
			if m.backup != "" {
				err = errors.Join(err, root.Rename(m.backup, target))
			}
			return errors.Join(err, rollback())
		}
		moved = append(moved, m)
	}
	return nil
}
