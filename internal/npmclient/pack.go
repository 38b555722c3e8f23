package npmclient

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Packed is a package directory packed as npm packs it.
type Packed struct {
	Name, Version string
	Manifest      map[string]any // package.json as written
	Files         []string       // paths inside the package, slash-separated, sorted
	Tarball       []byte
	Integrity     string // sha512 SRI
	Shasum        string // sha1, hex
}

// ErrBadPackage is a directory that cannot be packed.
var ErrBadPackage = errors.New("cannot pack")

// npmEpoch is the modification time npm writes into every tarball entry,
// so the same files always pack to the same bytes.
var npmEpoch = time.Date(1985, 10, 26, 8, 15, 0, 0, time.UTC)

var validName = regexp.MustCompile(`^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$`)

// neverIncluded are the files npm leaves out whatever the package says
// (npm-packlist's defaults); matched against each path and its parents.
var neverIncluded = compileRules([]string{
	".git", ".svn", ".hg", "CVS", ".lock-wscript", ".wafpickle-*", ".*.swp", ".DS_Store", "._*",
	"npm-debug.log", ".npmrc", "config.gypi", "*.orig", "/package-lock.json", "/node_modules",
	".npmignore", ".gitignore", "/archived-packages",
})

// alwaysIncluded are the root files npm packs whatever `files` and the
// ignore files say.
var alwaysIncluded = regexp.MustCompile(`(?i)^(package\.json|readme(\..*)?|licen[cs]e(\..*)?|notice(\..*)?)$`)

// Pack reads dir/package.json and packs the files npm would: only `files`
// (globs; a directory means everything under it) when package.json has
// that list, else everything the root .npmignore (or, without one,
// .gitignore) does not exclude; always package.json, README, LICENSE/LICENCE,
// NOTICE, the main file and the bin files; never .git, node_modules,
// package-lock.json, .npmrc and the other cruft npm drops. Symbolic links
// are not packed. .npmignore files below the root are not read.
func Pack(dir string) (*Packed, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPackage, err)
	}
	var manifest map[string]any
	if err := json.Unmarshal(raw, &manifest); err != nil {
		return nil, fmt.Errorf("%w: package.json: %v", ErrBadPackage, err)
	}
	name, _ := manifest["name"].(string)
	version, _ := manifest["version"].(string)
	if !validName.MatchString(name) || len(name) > 214 {
		return nil, fmt.Errorf("%w: package.json: name %q is not a valid npm package name", ErrBadPackage, name)
	}
	if !semverRe.MatchString(version) {
		return nil, fmt.Errorf("%w: package.json: version %q is not semver", ErrBadPackage, version)
	}
	forced := map[string]bool{}
	if m, ok := manifest["main"].(string); ok {
		forced[cleanRel(m)] = true
	}
	switch b := manifest["bin"].(type) {
	case string:
		forced[cleanRel(b)] = true
	case map[string]any:
		for _, v := range b {
			if s, ok := v.(string); ok {
				forced[cleanRel(s)] = true
			}
		}
	}
	var include func(string) bool
	if list, ok := manifest["files"].([]any); ok {
		var pats []string
		for _, f := range list {
			if s, ok := f.(string); ok {
				pats = append(pats, "/"+strings.TrimSuffix(cleanRel(s), "/"))
			}
		}
		rules := compileRules(pats)
		include = func(p string) bool { return rules.matches(p) }
	} else {
		var lines []string
		for _, f := range []string{".npmignore", ".gitignore"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err == nil {
				lines = strings.Split(string(b), "\n")
				break
			}
		}
		rules := compileRules(lines)
		include = func(p string) bool { return !rules.matches(p) }
	}

	var files []string
	executable := map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			if neverIncluded.matches(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || neverIncluded.matches(rel) {
			return nil
		}
		if alwaysIncluded.MatchString(rel) || forced[rel] || include(rel) {
			info, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, rel)
			executable[rel] = info.Mode()&0o111 != 0
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPackage, err)
	}
	sort.Strings(files)

	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		mode := int64(0o644)
		if executable[f] {
			mode = 0o755
		}
		body, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadPackage, err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: "package/" + f, Typeflag: tar.TypeReg, Mode: mode,
			Size: int64(len(body)), ModTime: npmEpoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	sum512 := sha512.Sum512(buf.Bytes())
	sum1 := sha1.Sum(buf.Bytes())
	return &Packed{Name: name, Version: version, Manifest: manifest, Files: files, Tarball: buf.Bytes(),
		Integrity: "sha512-" + base64.StdEncoding.EncodeToString(sum512[:]), Shasum: hex.EncodeToString(sum1[:])}, nil
}

var semverRe = regexp.MustCompile(`^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

func cleanRel(p string) string {
	p = path.Clean(strings.TrimPrefix(filepath.ToSlash(p), "./"))
	return strings.TrimPrefix(p, "/")
}

// rules is an ordered list of gitignore-style patterns; the last one
// matching a path (or one of its parent directories) decides.
type rules []rule

type rule struct {
	re     *regexp.Regexp
	negate bool
}

// compileRules reads gitignore lines: # comments, !negation, a leading or
// inner / anchors to the root, a trailing / is dropped (a directory match
// covers what is inside anyway), *, ? and ** globs.
func compileRules(lines []string) rules {
	var rs rules
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		r := rule{}
		if strings.HasPrefix(l, "!") {
			r.negate, l = true, l[1:]
		}
		l = strings.TrimSuffix(l, "/")
		anchored := strings.Contains(l, "/")
		l = strings.TrimPrefix(l, "/")
		if l == "" {
			continue
		}
		expr := globToRegexp(l)
		if !anchored {
			expr = "(.*/)?" + expr
		}
		re, err := regexp.Compile("^" + expr + "$")
		if err != nil {
			continue // a pattern npm could not use either
		}
		r.re = re
		rs = append(rs, r)
	}
	return rs
}

func (rs rules) matches(p string) bool {
	matched := false
	for _, r := range rs {
		// the path itself or any parent directory
		hit := r.re.MatchString(p)
		for q := p; !hit; {
			i := strings.LastIndexByte(q, '/')
			if i < 0 {
				break
			}
			q = q[:i]
			hit = r.re.MatchString(q)
		}
		if hit {
			matched = !r.negate
		}
	}
	return matched
}

func globToRegexp(g string) string {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		switch c := g[i]; {
		case strings.HasPrefix(g[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(g[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			j := strings.IndexByte(g[i:], ']')
			if j < 0 {
				b.WriteString(`\[`)
				continue
			}
			b.WriteString(g[i : i+j+1])
			i += j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String()
}
