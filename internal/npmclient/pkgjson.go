package npmclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"
)

// ErrPackageJSON is a package.json that cannot be read or saved.
var ErrPackageJSON = errors.New("package.json")

// ErrNoPackageJSON is a project without a package.json.
var ErrNoPackageJSON = errors.New("no package.json")

// ProjectDeps reads the dependencies and optionalDependencies of
// dir/package.json (an optional dependency of the same name as a
// dependency wins, as in npm). devDependencies are not installed.
func ProjectDeps(dir string) ([]Spec, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s", ErrNoPackageJSON, dir)
		}
		return nil, err
	}
	defer root.Close()
	data, err := root.ReadFile("package.json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoPackageJSON, dir)
	}
	if err != nil {
		return nil, err
	}
	doc, err := parseOrdered(data)
	if err != nil {
		return nil, err
	}
	obj, ok := doc.(*object)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrPackageJSON)
	}
	specs := map[string]Spec{}
	for _, group := range []struct {
		key      string
		optional bool
	}{{"dependencies", false}, {"optionalDependencies", true}} {
		v, ok := obj.get(group.key)
		if !ok || v == nil {
			continue
		}
		deps, ok := v.(*object)
		if !ok {
			return nil, fmt.Errorf("%w: %s is not an object", ErrPackageJSON, group.key)
		}
		for i, name := range deps.keys {
			spec, ok := deps.values[i].(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s: %q: the version is not a string", ErrPackageJSON, group.key, name)
			}
			specs[name] = Spec{Name: name, Range: spec, Optional: group.optional}
		}
	}
	out := make([]Spec, 0, len(specs))
	for _, s := range specs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SavedSpec is what npm writes into package.json for a package installed
// as version from what was asked (spec.Range): "^version" for a tag, an
// exact version or "*"; for a range, "^version" when that is within the
// range, else the range as written; an alias keeps its "npm:name@" part.
func SavedSpec(spec Spec, pkg, version string) (string, error) {
	w, err := parseWant(spec.Name, spec.Range, "the project")
	if err != nil {
		return "", err
	}
	prefixed := "^" + version
	saved := prefixed
	if w.rng != nil && w.text != "*" && !exactVersion.MatchString(w.text) && !caretWithin(version, w.rng, w.text) {
		saved = w.text
	}
	if w.alias {
		return "npm:" + pkg + "@" + saved, nil
	}
	return saved, nil
}

// exactVersion is a range npm reads as one version (npm-package-arg's
// "version" type: semver.valid, loose).
var exactVersion = regexp.MustCompile(`^[=v\s]*\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

var versionToken = regexp.MustCompile(`\d+(\.\d+)?(\.\d+)?`)

// caretWithin says whether every version ^version allows is in rng (npm's
// semver.subset). A range's membership only changes at versions written in
// it and their neighbours, so those points (and the ends of ^version) are
// all that need checking.
func caretWithin(version string, rng *semver.Constraints, text string) bool {
	v, err := semver.NewVersion(version)
	if err != nil {
		return false
	}
	if !rng.Check(v) {
		return false
	}
	base := [3]uint64{v.Major(), v.Minor(), v.Patch()}
	var upper [3]uint64
	switch {
	case base[0] > 0:
		upper = [3]uint64{base[0] + 1, 0, 0}
	case base[1] > 0:
		upper = [3]uint64{0, base[1] + 1, 0}
	default:
		upper = [3]uint64{0, 0, base[2] + 1}
	}
	points := [][3]uint64{base, pred(upper)}
	for _, tok := range versionToken.FindAllString(text, -1) {
		var t [3]uint64
		for i, part := range strings.SplitN(tok, ".", 3) {
			t[i], _ = strconv.ParseUint(part, 10, 32)
		}
		for _, p := range [][3]uint64{t, {t[0], t[1], t[2] + 1}, {t[0], t[1] + 1, 0}, {t[0] + 1, 0, 0}} {
			points = append(points, p, pred(p))
		}
	}
	for _, p := range points {
		if less(p, base) || !less(p, upper) {
			continue
		}
		if !rng.Check(semver.New(p[0], p[1], p[2], "", "")) {
			return false
		}
	}
	return true
}

// pred is the release just before p, with 999999999 standing for "any".
func pred(p [3]uint64) [3]uint64 {
	const any = 999999999
	switch {
	case p[2] > 0:
		return [3]uint64{p[0], p[1], p[2] - 1}
	case p[1] > 0:
		return [3]uint64{p[0], p[1] - 1, any}
	case p[0] > 0:
		return [3]uint64{p[0] - 1, any, any}
	}
	return p
}

func less(a, b [3]uint64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// Saved is one dependency to record in package.json.
type Saved struct{ Name, Spec string }

// SaveDependencies records deps in dir/package.json as npm install does:
// in the group that already has the name (devDependencies,
// optionalDependencies, dependencies, peerDependencies, in npm's order of
// looking), else in dependencies; every dependency group sorted, empty
// groups dropped, the rest of the file as it was, in the file's own
// indentation and line ending (two spaces and \n for a new file). The file
// is written whole and renamed into place, through an os.Root of dir.
func SaveDependencies(dir string, deps []Saved) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	data, err := root.ReadFile("package.json")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	out, err := savedPackageJSON(data, deps)
	if err != nil || out == nil {
		return err
	}
	return writeFileIn(root, "package.json", out)
}

// savedPackageJSON is package.json data (nil for none) with deps saved;
// nil when nothing changes.
func savedPackageJSON(data []byte, deps []Saved) ([]byte, error) {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	indent, eol := "  ", "\n"
	obj := &object{}
	if data != nil {
		doc, err := parseOrdered(data)
		if err != nil {
			return nil, err
		}
		var ok bool
		if obj, ok = doc.(*object); !ok {
			return nil, fmt.Errorf("%w: not a JSON object", ErrPackageJSON)
		}
		indent, eol = jsonFormat(data)
	}
	group := func(key string) *object {
		v, _ := obj.get(key)
		g, _ := v.(*object)
		return g
	}
	has := func(key, name string) bool {
		g := group(key)
		if g == nil {
			return false
		}
		_, ok := g.get(name)
		return ok
	}
	ensure := func(key string) *object {
		if g := group(key); g != nil {
			return g
		}
		g := &object{}
		obj.set(key, g)
		return g
	}
	for _, d := range deps {
		switch {
		case has("devDependencies", d.Name):
			group("dependencies").del(d.Name)
			ensure("devDependencies").set(d.Name, d.Spec)
			if has("optionalDependencies", d.Name) {
				group("optionalDependencies").set(d.Name, d.Spec)
			}
		case has("optionalDependencies", d.Name):
			group("peerDependencies").del(d.Name)
			group("optionalDependencies").set(d.Name, d.Spec)
		case has("dependencies", d.Name) || !has("peerDependencies", d.Name):
			group("devDependencies").del(d.Name)
			group("peerDependencies").del(d.Name)
			ensure("dependencies").set(d.Name, d.Spec)
		default: // only a peer dependency: it stays one
			group("dependencies").del(d.Name)
			group("optionalDependencies").del(d.Name)
			group("peerDependencies").set(d.Name, d.Spec)
		}
	}
	if deps := group("dependencies"); deps != nil {
		if opt := group("optionalDependencies"); opt != nil {
			for _, k := range opt.keys {
				deps.del(k)
			}
		}
	}
	for _, key := range []string{"dependencies", "optionalDependencies", "devDependencies", "peerDependencies"} {
		g := group(key)
		if g == nil {
			continue
		}
		if len(g.keys) == 0 {
			obj.del(key)
			continue
		}
		g.sortKeys()
	}
	var b strings.Builder
	stringifyJS(&b, obj, indent, "")
	b.WriteString("\n")
	out := strings.ReplaceAll(b.String(), "\n", eol)
	if data != nil && strings.TrimSpace(out) == strings.TrimSpace(string(data)) {
		return nil, nil
	}
	return []byte(out), nil
}

// jsonFormat is the indentation and line ending npm keeps when it rewrites
// a JSON file (json-parse-even-better-errors): those of the line after the
// opening brace; none at all for a file on one line.
func jsonFormat(data []byte) (indent, eol string) {
	s := string(data)
	if len(s) >= 2 && (s[:2] == "{}" || s[:2] == "[]") && isNewlines(s[2:]) {
		if s[2:] == "" {
			return "  ", "\n"
		}
		return "  ", s[2:]
	}
	i := 0
	for i < len(s) && isJSSpace(s[i]) {
		i++
	}
	if i >= len(s) || (s[i] != '{' && s[i] != '[') {
		return "", ""
	}
	i++
	start := i
	for i < len(s) && (s[i] == '\n' || (s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n')) {
		if s[i] == '\r' {
			i++
		}
		i++
	}
	if i == start {
		return "", ""
	}
	eol = s[start:i]
	j := i
	for j < len(s) && isJSSpace(s[j]) {
		j++
	}
	return s[i:j], eol
}

// isNewlines says whether s is (\r?\n)*, as npm's pattern for an empty
// file ("{}" and line ends) wants.
func isNewlines(s string) bool {
	return strings.Trim(strings.ReplaceAll(s, "\r\n", "\n"), "\n") == ""
}

func isJSSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// writeFileIn writes name in root whole: a temporary file, then a rename.
func writeFileIn(root *os.Root, name string, data []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := root.Stat(name); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp := fmt.Sprintf(".%s.regedge-%d", name, os.Getpid())
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		_ = root.Remove(tmp) // the write's error is the one to report; a leftover dot file harms nothing
	}
	return err
}

// object is a JSON object that keeps its keys in order, as a JavaScript
// object does.
type object struct {
	keys   []string
	values []any
	index  map[string]int // position of each key
}

func (o *object) get(k string) (any, bool) {
	if o == nil {
		return nil, false
	}
	if i, ok := o.index[k]; ok {
		return o.values[i], true
	}
	return nil, false
}

func (o *object) set(k string, v any) {
	if i, ok := o.index[k]; ok {
		o.values[i] = v
		return
	}
	if o.index == nil {
		o.index = map[string]int{}
	}
	o.index[k] = len(o.keys)
	o.keys = append(o.keys, k)
	o.values = append(o.values, v)
}

func (o *object) del(k string) {
	if o == nil {
		return
	}
	i, ok := o.index[k]
	if !ok {
		return
	}
	o.keys = append(o.keys[:i], o.keys[i+1:]...)
	o.values = append(o.values[:i], o.values[i+1:]...)
	o.reindex()
}

func (o *object) reindex() {
	o.index = make(map[string]int, len(o.keys))
	for i, k := range o.keys {
		o.index[k] = i
	}
}

func (o *object) sortKeys() {
	idx := make([]int, len(o.keys))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return collate(o.keys[idx[a]], o.keys[idx[b]]) < 0 })
	keys, values := make([]string, len(idx)), make([]any, len(idx))
	for i, j := range idx {
		keys[i], values[i] = o.keys[j], o.values[j]
	}
	o.keys, o.values = keys, values
	o.reindex()
}

// parseOrdered decodes JSON into *object, []any, string, json.Number,
// bool and nil, as JSON.parse would (a repeated key keeps its first place
// and its last value).
func parseOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPackageJSON, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON value", ErrPackageJSON)
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > 1000 {
		return nil, errors.New("nested too deep")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &object{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				o.set(k, v)
			}
			_, err := dec.Token()
			return o, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token()
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

// stringifyJS writes v as JSON.stringify(v, null, indent) does.
func stringifyJS(b *strings.Builder, v any, indent, cur string) {
	if len(indent) > 10 {
		indent = indent[:10]
	}
	inner := cur + indent
	switch t := v.(type) {
	case *object:
		if len(t.keys) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteByte('{')
		for n, i := range jsKeyOrder(t.keys) {
			if n > 0 {
				b.WriteByte(',')
			}
			if indent != "" {
				b.WriteString("\n" + inner)
			}
			quoteJS(b, t.keys[i])
			b.WriteByte(':')
			if indent != "" {
				b.WriteByte(' ')
			}
			stringifyJS(b, t.values[i], indent, inner)
		}
		if indent != "" {
			b.WriteString("\n" + cur)
		}
		b.WriteByte('}')
	case []any:
		if len(t) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				b.WriteByte(',')
			}
			if indent != "" {
				b.WriteString("\n" + inner)
			}
			stringifyJS(b, e, indent, inner)
		}
		if indent != "" {
			b.WriteString("\n" + cur)
		}
		b.WriteByte(']')
	case string:
		quoteJS(b, t)
	case json.Number:
		b.WriteString(jsNumber(t))
	case bool:
		b.WriteString(strconv.FormatBool(t))
	default:
		b.WriteString("null")
	}
}

// jsKeyOrder is the order JavaScript keeps an object's keys in: array
// indexes first, ascending, then the rest as inserted.
func jsKeyOrder(keys []string) []int {
	var idx, rest []int
	for i, k := range keys {
		if n, err := strconv.ParseUint(k, 10, 32); err == nil && n < math.MaxUint32 && strconv.FormatUint(n, 10) == k {
			idx = append(idx, i)
		} else {
			rest = append(rest, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool {
		x, _ := strconv.ParseUint(keys[idx[a]], 10, 32)
		y, _ := strconv.ParseUint(keys[idx[b]], 10, 32)
		return x < y
	})
	return append(idx, rest...)
}

// quoteJS quotes s as JSON.stringify does.
func quoteJS(b *strings.Builder, s string) {
	b.WriteByte('"')
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteString(s[:size])
		}
		s = s[size:]
	}
	b.WriteByte('"')
}

// jsNumber formats a number as JavaScript's Number#toString does.
func jsNumber(n json.Number) string {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) {
		if math.IsInf(f, 0) {
			return "null"
		}
		return string(n)
	}
	if f == 0 {
		return "0"
	}
	abs := math.Abs(f)
	if abs >= 1e-7 && abs < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(s, "e")
	sign := exp[0]
	exp = strings.TrimLeft(exp[1:], "0")
	return mant + "e" + string(sign) + exp
}
