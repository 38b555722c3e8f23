package npmclient

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"sort"
	"strings"
)

// Limits on one resolution (variables so tests can lower them): how deep
// node_modules may nest, and how many packages one install may place.
// Together they bound the time and memory of a resolution by the size of
// the tree, whatever a registry answers.
var (
	MaxDepth    = 64
	MaxPackages = 50000
)

// ErrCycle is a dependency cycle no placement settles.
var ErrCycle = errors.New("dependency cycle")

// ErrTooManyPackages is a tree over MaxPackages.
var ErrTooManyPackages = errors.New("too many packages")

// node is the project or one package at one place of node_modules.
type node struct {
	name     string // its directory under node_modules (the dependency's name, or an alias)
	pkg      string // the registry package
	v        *Version
	parent   *node
	children map[string]*node
	depth    int    // 0 for the project, 1 for node_modules/x
	path     string // "node_modules/a/node_modules/b"; "" for the project
	link     *node  // set for a link to a copy higher up, as npm makes to end a cycle
	out      map[string]*edge
	in       []*edge
	placedBy *edge // the edge that made this node
}

// edge is one dependency of a node.
type edge struct {
	from     *node
	name     string
	spec     string
	w        want
	err      error // a spec this client cannot install (git, file, not a range, ...)
	optional bool
	to       *node
}

func (n *node) label() string {
	if n.parent == nil {
		return "the project"
	}
	return n.pkg + "@" + n.v.Version
}

// real is the node a link points at, or n.
func (n *node) real() *node {
	if n.link != nil {
		return n.link
	}
	return n
}

func (n *node) isUnder(t *node) bool {
	for p := n; p != nil; p = p.parent {
		if p == t {
			return true
		}
	}
	return false
}

// resolve is the node require(name) finds from n: n's own node_modules,
// then each ancestor's.
func (n *node) resolve(name string) *node {
	for p := n; p != nil; p = p.parent {
		if c := p.children[name]; c != nil {
			return c
		}
	}
	return nil
}

func (e *edge) key() string { return e.from.label() + " > " + e.name }

func (e *edge) String() string { return e.name + "@" + e.spec + " (wanted by " + e.from.label() + ")" }

// optionalFailure is a failure below an optional dependency: that
// dependency is left out and the tree resolved again.
type optionalFailure struct {
	edge *edge
	err  error
}

func (f *optionalFailure) Error() string { return f.err.Error() }
func (f *optionalFailure) Unwrap() error { return f.err }

// planner lays out a node_modules tree the way npm's arborist does, in a
// simplified form: the project's dependencies first, then every placed
// package in order of depth and path, each missing dependency placed as
// high as it can go without shadowing a copy another package relies on,
// an existing copy reused when it satisfies the range, and a link to a
// copy higher up instead of nesting the same package and version again
// (npm's answer to a1 -> b1 -> a2 -> b2 -> a1).
type planner struct {
	c        *Client
	ctx      context.Context
	docs     map[string]*Packument
	excluded map[string]bool // optional edges left out, by key
	skipped  []string
}

func newPlanner(ctx context.Context, c *Client) *planner {
	return &planner{c: c, ctx: ctx, docs: map[string]*Packument{}, excluded: map[string]bool{}}
}

func (p *planner) packument(name string) (*Packument, error) {
	if d, ok := p.docs[name]; ok {
		return d, nil
	}
	d, err := p.c.Packument(p.ctx, name)
	if err != nil {
		return nil, err
	}
	p.docs[name] = d
	return d, nil
}

// plan resolves specs into a tree, leaving out the optional dependencies
// that fail (and saying so in p.skipped).
func (p *planner) plan(specs []Spec) (*node, error) {
	for {
		root, err := p.planOnce(specs)
		var of *optionalFailure
		if errors.As(err, &of) {
			if err := p.exclude(of); err != nil {
				return nil, err
			}
			continue
		}
		return root, err
	}
}

// exclude leaves out the optional edge of a failure; a second failure of
// the same edge means leaving it out did not help, and is the error.
func (p *planner) exclude(of *optionalFailure) error {
	k := of.edge.key()
	if p.excluded[k] {
		return of.err
	}
	p.excluded[k] = true
	p.skipped = append(p.skipped, fmt.Sprintf("skipped optional dependency %s: %v", of.edge, of.err))
	return nil
}

func (p *planner) planOnce(specs []Spec) (*node, error) {
	root := &node{children: map[string]*node{}, out: map[string]*edge{}}
	for _, s := range specs {
		if err := checkNameFrom(s.Name, "package", "the project"); err != nil {
			return nil, err
		}
		if prev := root.out[s.Name]; prev != nil {
			return nil, fmt.Errorf("%s asked for twice, as %s and %s", s.Name, prev.spec, s.Range)
		}
		e := &edge{from: root, name: s.Name, spec: s.Range, optional: s.Optional}
		if e.w, e.err = parseWant(s.Name, s.Range, "the project"); errors.Is(e.err, ErrBadName) {
			return nil, e.err
		}
		root.out[s.Name] = e
	}
	q := &nodeQueue{root}
	count := 0
	for q.Len() > 0 {
		n := heap.Pop(q).(*node)
		names := make([]string, 0, len(n.out))
		for name := range n.out {
			names = append(names, name)
		}
		sort.Slice(names, func(i, j int) bool { return collate(names[i], names[j]) < 0 })
		for _, name := range names {
			e := n.out[name]
			if p.excluded[e.key()] {
				continue
			}
			placed, err := p.place(e, count)
			if err != nil {
				return nil, err
			}
			if placed != nil {
				count++
				if placed.link == nil {
					heap.Push(q, placed)
				}
			}
		}
	}
	return root, nil
}

// place resolves e: an existing copy when one satisfies it, else a new
// node (returned) at the highest place it fits.
func (p *planner) place(e *edge, count int) (*node, error) {
	if e.err != nil {
		return nil, p.fail(e, e.err)
	}
	if found := e.from.resolve(e.name); found != nil && e.w.allows(found.real().pkg, found.real().v.Version) {
		connect(e, found.real())
		return nil, nil
	}
	doc, err := p.packument(e.w.pkg)
	if err != nil {
		return nil, p.fail(e, err)
	}
	v, err := pick(doc, e.w)
	if err != nil {
		return nil, p.fail(e, err)
	}
	if !platformAllows(nodePlatform, v.OS) || !platformAllows(nodeArch, v.CPU) {
		return nil, p.fail(e, fmt.Errorf("%s@%s is for os %v, cpu %v; this is %s %s", e.w.pkg, v.Version, []string(v.OS), []string(v.CPU), nodePlatform, nodeArch))
	}
	if u, err := url.Parse(v.Dist.Tarball); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, p.fail(e, fmt.Errorf("%s@%s: tarball URL %q is not http(s)", e.w.pkg, v.Version, v.Dist.Tarball))
	}
	var target *node
	for t := e.from; t != nil; t = t.parent {
		ok, keep := canPlace(t, e, v)
		if keep != nil {
			connect(e, keep)
			return nil, nil
		}
		if !ok {
			break
		}
		target = t
	}
	if target == nil {
		return nil, p.fail(e, fmt.Errorf("%s@%s conflicts with %s/node_modules/%s", e.w.pkg, v.Version, e.from.path, e.name))
	}
	if count >= MaxPackages {
		return nil, fmt.Errorf("%w: over %d", ErrTooManyPackages, MaxPackages)
	}
	for a := target; a.parent != nil; a = a.parent {
		if a.link == nil && a.pkg == e.w.pkg && a.v.Version == v.Version {
			l := target.add(e.name, a.pkg, a.v)
			l.link = a
			connect(e, a)
			return l, nil
		}
	}
	if target.depth+1 > MaxDepth {
		return nil, p.fail(e, cycleError(e, v))
	}
	n := target.add(e.name, e.w.pkg, v)
	n.placedBy = e
	if err := n.readDeps(); err != nil {
		return nil, err
	}
	connect(e, n)
	return n, nil
}

func connect(e *edge, n *node) {
	e.to = n
	n.in = append(n.in, e)
}

// canPlace says whether v may go into t's node_modules for e: not when a
// different package or version is there, when t itself wants something
// else by that name, or when a package under t relies on a copy above t
// that v would shadow. keep is an identical copy already there.
func canPlace(t *node, e *edge, v *Version) (ok bool, keep *node) {
	if cur := t.children[e.name]; cur != nil {
		if r := cur.real(); r.pkg == e.w.pkg && r.v.Version == v.Version {
			return true, r
		}
		return false, nil
	}
	if own := t.out[e.name]; own != nil && own != e && own.err == nil && !own.w.allows(e.w.pkg, v.Version) {
		return false, nil
	}
	if t.parent != nil {
		if above := t.parent.resolve(e.name); above != nil {
			for _, in := range above.real().in {
				if in.name == e.name && in.from.isUnder(t) && !in.w.allows(e.w.pkg, v.Version) {
					return false, nil
				}
			}
		}
	}
	return true, nil
}

// add makes a child of t.
func (t *node) add(name, pkg string, v *Version) *node {
	n := &node{name: name, pkg: pkg, v: v, parent: t, depth: t.depth + 1,
		path: path.Join(t.path, "node_modules", name), children: map[string]*node{}}
	t.children[name] = n
	return n
}

// readDeps makes n's edges from its version's dependencies and optional
// dependencies, less the bundled ones (they come in its tarball). Every
// name is checked before it can become a path.
func (n *node) readDeps() error {
	v, who := n.v, n.label()
	n.out = map[string]*edge{}
	all, bundledNames := v.bundledNames()
	inBundle := map[string]bool{}
	for _, b := range bundledNames {
		if err := checkNameFrom(b, "bundled dependency", who); err != nil {
			return err
		}
		inBundle[b] = true
	}
	for _, group := range []struct {
		deps     map[string]string
		optional bool
	}{{v.Dependencies, false}, {v.OptionalDependencies, true}} {
		for name, spec := range group.deps {
			if err := checkNameFrom(name, "dependency", who); err != nil {
				return err
			}
			if all && !group.optional || inBundle[name] {
				continue
			}
			e := &edge{from: n, name: name, spec: spec, optional: group.optional}
			if e.w, e.err = parseWant(name, spec, who); errors.Is(e.err, ErrBadName) {
				return e.err
			}
			n.out[name] = e // an optional dependency overrides a dependency of the same name, as in npm
		}
	}
	return nil
}

// fail is err for e: an optionalFailure when e, or an edge above it that
// placed its package, is optional; else err itself, saying who asked.
func (p *planner) fail(e *edge, err error) error {
	err = fmt.Errorf("%s: %w", e, err)
	for x := e; x != nil; x = x.from.placedBy {
		if x.optional {
			return &optionalFailure{edge: x, err: err}
		}
	}
	return err
}

// blame is the optional edge whose leaving out would drop n, or nil.
func blame(n *node) *edge {
	for x := n.placedBy; x != nil; x = x.from.placedBy {
		if x.optional {
			return x
		}
	}
	return nil
}

// cycleError names the chain of dependencies (who wanted whom) that
// nests too deep, and the packages that repeat in it.
func cycleError(e *edge, v *Version) error {
	chain := []string{e.w.pkg + "@" + v.Version}
	seen := map[string]int{e.w.pkg: 1}
	var repeating []string
	for n := e.from; n.parent != nil; n = n.placedBy.from {
		chain = append(chain, n.label())
		if seen[n.pkg]++; seen[n.pkg] == 2 {
			repeating = append(repeating, n.pkg)
		}
	}
	slices.Reverse(chain)
	sort.Strings(repeating)
	shown := chain
	if len(chain) > 10 {
		shown = append(append(append([]string(nil), chain[:6]...), fmt.Sprintf("… %d more …", len(chain)-9)), chain[len(chain)-3:]...)
	}
	return fmt.Errorf("%w through %s: no copy satisfies the ranges and node_modules would nest deeper than %d levels: %s",
		ErrCycle, strings.Join(repeating, ", "), MaxDepth, strings.Join(shown, " > "))
}

// flatten lists the placed nodes of a tree in path order (a directory
// before what it holds).
func flatten(root *node) []*node {
	var out []*node
	var walk func(*node)
	walk = func(n *node) {
		for _, c := range n.children {
			out = append(out, c)
			walk(c)
		}
	}
	walk(root)
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

// nodeQueue orders nodes as npm's dependency queue does: by depth, then
// path.
type nodeQueue []*node

func (q nodeQueue) Len() int { return len(q) }
func (q nodeQueue) Less(i, j int) bool {
	if q[i].depth != q[j].depth {
		return q[i].depth < q[j].depth
	}
	return collate(q[i].path, q[j].path) < 0
}
func (q nodeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *nodeQueue) Push(x any)   { *q = append(*q, x.(*node)) }
func (q *nodeQueue) Pop() any {
	old := *q
	n := old[len(old)-1]
	*q = old[:len(old)-1]
	return n
}

// collationOrder is the order of the punctuation that can appear in package
// names and paths under the Unicode root collation npm sorts with
// (localeCompare "en"): punctuation, then digits, then letters.
const collationOrder = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789abcdefghijklmnopqrstuvwxyz"

// collate compares like localeCompare("en") does for ASCII: letters
// without regard to case first, lower case before upper on a tie.
func collate(a, b string) int {
	primary := func(c byte) int {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if i := strings.IndexByte(collationOrder, c); i >= 0 {
			return i
		}
		return len(collationOrder) + int(c)
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		if pa, pb := primary(a[i]), primary(b[i]); pa != pb {
			return pa - pb
		}
	}
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	for i := 0; i < len(a); i++ {
		la, lb := 'a' <= a[i] && a[i] <= 'z', 'a' <= b[i] && b[i] <= 'z'
		if la != lb {
			if la {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}
