package npmclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Spec is one package to install: a name and a semver range, a dist-tag, or
// an exact version.
type Spec struct{ Name, Range string }

// ParseSpec reads "name", "name@range", "@scope/name@range".
func ParseSpec(s string) Spec {
	at := strings.LastIndex(s, "@")
	if at <= 0 {
		return Spec{Name: s, Range: "latest"}
	}
	return Spec{Name: s[:at], Range: s[at+1:]}
}

// pick chooses the highest version of p satisfying rng (or the dist-tag).
func pick(p *Packument, rng string) (*Version, error) {
	if rng == "" {
		rng = "latest"
	}
	if tagged, ok := p.DistTags[rng]; ok {
		if v := p.Versions[tagged]; v != nil {
			return v, nil
		}
	}
	c, err := semver.NewConstraint(rng)
	if err != nil {
		return nil, fmt.Errorf("%s: range %q: %w", p.Name, rng, err)
	}
	var best *semver.Version
	var bestV *Version
	for s, v := range p.Versions {
		sv, err := semver.NewVersion(s)
		if err != nil || !c.Check(sv) {
			continue
		}
		if best == nil || sv.GreaterThan(best) {
			best, bestV = sv, v
		}
	}
	if bestV == nil {
		return nil, fmt.Errorf("%s: no version matches %q", p.Name, rng)
	}
	return bestV, nil
}

// placed is one package at one place in the node_modules tree.
type placed struct {
	path string // relative to the project, e.g. node_modules/a/node_modules/b
	v    *Version
}

// plan resolves specs and their production dependencies into a
// node_modules layout: hoisted to the top where versions agree, nested
// under the dependent where they conflict.
func (c *Client) plan(ctx context.Context, specs []Spec) ([]placed, error) {
	docs := map[string]*Packument{}
	get := func(name string) (*Packument, error) {
		if p, ok := docs[name]; ok {
			return p, nil
		}
		p, err := c.Packument(ctx, name)
		if err != nil {
			return nil, err
		}
		docs[name] = p
		return p, nil
	}
	byPath := map[string]*Version{}
	type job struct {
		parent string // path of the dependent ("" for the project)
		name   string
		rng    string
	}
	var queue []job
	for _, s := range specs {
		queue = append(queue, job{"", s.Name, s.Range})
	}
	for len(queue) > 0 {
		j := queue[0]
		queue = queue[1:]
		p, err := get(j.name)
		if err != nil {
			return nil, err
		}
		v, err := pick(p, j.rng)
		if err != nil {
			return nil, err
		}
		top := "node_modules/" + j.name
		var at string
		switch existing := byPath[top]; {
		case existing == nil:
			at = top // hoisted
		case existing.Version == v.Version:
			continue // already there
		case j.parent == "":
			return nil, fmt.Errorf("%s asked for twice, as %s and %s", j.name, existing.Version, v.Version)
		default:
			at = j.parent + "/node_modules/" + j.name // nested under its dependent
			if byPath[at] != nil {
				continue
			}
		}
		byPath[at] = v
		deps := make([]string, 0, len(v.Dependencies))
		for d := range v.Dependencies {
			deps = append(deps, d)
		}
		sort.Strings(deps)
		for _, d := range deps {
			queue = append(queue, job{at, d, v.Dependencies[d]})
		}
	}
	out := make([]placed, 0, len(byPath))
	for path, v := range byPath {
		out = append(out, placed{path, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// Install resolves, downloads, verifies and unpacks specs into
// dir/node_modules. Everything is staged in a sibling directory and moved
// into place at the end: on any failure node_modules is as it was.
func (c *Client) Install(ctx context.Context, dir string, specs []Spec, log io.Writer) ([]string, error) {
	plan, err := c.plan(ctx, specs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(dir, ".regedge-install-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(stage) }() // a leftover hidden staging directory harms nothing
	var done []string
	for _, p := range plan {
		tgz, err := c.Tarball(ctx, p.v)
		if err != nil {
			return nil, err
		}
		target := filepath.Join(stage, filepath.FromSlash(p.path))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return nil, err
		}
		if err := Extract(bytes.NewReader(tgz), target); err != nil {
			return nil, fmt.Errorf("%s@%s: %w", p.v.Name, p.v.Version, err)
		}
		fmt.Fprintf(log, "fetched %s@%s (%d bytes, integrity ok) -> %s\n", p.v.Name, p.v.Version, len(tgz), p.path)
		done = append(done, p.v.Name+"@"+p.v.Version)
	}
	if err := moveIntoPlace(filepath.Join(stage, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		return nil, err
	}
	return done, nil
}

// moveIntoPlace moves every package of staged into dst (created if
// missing), replacing packages of the same name; scoped packages move one by
// one so the rest of a scope stays. On failure the packages already replaced
// are put back.
func moveIntoPlace(staged, dst string) error {
	var names []string // relative to staged: "a", "@s/b"
	entries, err := os.ReadDir(staged)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "@") {
			names = append(names, e.Name())
			continue
		}
		scoped, err := os.ReadDir(filepath.Join(staged, e.Name()))
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
			errs = append(errs, os.RemoveAll(filepath.Join(dst, m.name)))
			if m.backup != "" {
				errs = append(errs, os.Rename(m.backup, filepath.Join(dst, m.name)))
			}
		}
		return errors.Join(errs...)
	}
	backups := filepath.Dir(staged)
	for i, name := range names {
		target := filepath.Join(dst, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return errors.Join(err, rollback())
		}
		m := move{name: name}
		if _, err := os.Lstat(target); err == nil {
			m.backup = filepath.Join(backups, fmt.Sprintf(".old-%d", i))
			if err := os.Rename(target, m.backup); err != nil {
				return errors.Join(err, rollback())
			}
		}
		if err := os.Rename(filepath.Join(staged, filepath.FromSlash(name)), target); err != nil {
			if m.backup != "" {
				err = errors.Join(err, os.Rename(m.backup, target))
			}
			return errors.Join(err, rollback())
		}
		moved = append(moved, m)
	}
	for _, m := range moved {
		if m.backup != "" {
			_ = os.RemoveAll(m.backup) // installed already; the backup goes with the staging directory anyway
		}
	}
	return nil
}
