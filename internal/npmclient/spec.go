package npmclient

import (
	"errors"
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Spec is one package to install: the name it gets under node_modules and
// what was asked for (a semver range, an exact version, a dist-tag, or an
// alias "npm:other@range").
type Spec struct {
	Name, Range string
	Optional    bool // an optionalDependency: skipped, with a warning, when it cannot be installed
}

// ParseSpec reads "name", "name@range", "@scope/name@range",
// "name@npm:other@range". A bare name means the latest dist-tag.
func ParseSpec(s string) Spec {
	at := strings.IndexByte(s, '@')
	if at == 0 {
		if i := strings.IndexByte(s[1:], '@'); i >= 0 {
			at = i + 1
		} else {
			at = -1
		}
	}
	if at < 0 {
		return Spec{Name: s, Range: "latest"}
	}
	rng := s[at+1:]
	if rng == "" {
		rng = "latest"
	}
	return Spec{Name: s[:at], Range: rng}
}

// ErrUnsupportedSpec is a dependency that is not a registry version: git,
// a URL, a file or directory, a workspace.
var ErrUnsupportedSpec = errors.New("not a registry version, range, tag or npm: alias")

// want is what one dependency asks of the registry.
type want struct {
	pkg   string // the package to fetch (the alias target for "npm:")
	rng   *semver.Constraints
	tag   string // set instead of rng for a dist-tag
	alias bool
	text  string // the range or tag as written
}

// parseWant reads the value of a dependency named name. Registry names
// inside it (an alias target) are checked (a *BadNameError); wanted says
// who asked. Other errors say only what is wrong with spec: the caller
// knows the dependency.
func parseWant(name, spec, wanted string) (want, error) {
	spec = strings.TrimSpace(spec)
	w := want{pkg: name}
	if rest, ok := strings.CutPrefix(spec, "npm:"); ok {
		target := ParseSpec(rest)
		if err := checkNameFrom(target.Name, "alias target", wanted); err != nil {
			return want{}, err
		}
		if strings.HasPrefix(target.Range, "npm:") {
			return want{}, fmt.Errorf("%q: an alias of an alias: %w", spec, ErrUnsupportedSpec)
		}
		w.pkg, w.alias = target.Name, true
		spec = target.Range
	}
	if spec == "" || spec == "*" || spec == "x" || spec == "X" {
		spec = "*"
	}
	if strings.ContainsAny(spec, ":/#\\") || strings.HasPrefix(spec, "~/") {
		return want{}, fmt.Errorf("%q: %w", spec, ErrUnsupportedSpec)
	}
	w.text = spec
	if c, err := semver.NewConstraint(spec); err == nil {
		w.rng = c
		return w, nil
	}
	// npm takes anything that is not a range for a dist-tag, if it could
	// be one (encodeURIComponent leaves it alone).
	if checkNamePart(spec) == "" {
		w.tag = spec
		return w, nil
	}
	return want{}, fmt.Errorf("%q is neither a semver range nor a dist-tag", spec)
}

// allows says whether version meets w (npm's depValid: any version for a
// tag, semver for the rest; an alias must be of the same package).
func (w want) allows(pkg, version string) bool {
	if pkg != w.pkg {
		return false
	}
	if w.tag != "" || w.text == "*" {
		return true
	}
	v, err := semver.NewVersion(version)
	return err == nil && w.rng.Check(v)
}

// pick chooses the version of p that npm would (npm-pick-manifest): the
// dist-tag for a tag; for a range, the latest tag when it satisfies and is
// not deprecated, else the highest satisfying version, preferring versions
// that are not deprecated.
func pick(p *Packument, w want) (*Version, error) {
	if w.tag != "" {
		if v := p.Versions[p.DistTags[w.tag]]; v != nil {
			return v, nil
		}
		return nil, fmt.Errorf("%s: no dist-tag %q", w.pkg, w.tag)
	}
	if latest := p.Versions[p.DistTags["latest"]]; latest != nil && latest.Deprecated == "" && w.allows(w.pkg, latest.Version) {
		return latest, nil
	}
	var best *semver.Version
	var bestV *Version
	bestDeprecated := true
	for s, v := range p.Versions {
		sv, err := semver.NewVersion(s)
		if err != nil || v == nil || !w.allows(w.pkg, s) {
			continue
		}
		deprecated := v.Deprecated != ""
		switch {
		case bestV == nil,
			bestDeprecated && !deprecated,
			bestDeprecated == deprecated && sv.GreaterThan(best):
			best, bestV, bestDeprecated = sv, v, deprecated
		}
	}
	if bestV == nil {
		return nil, fmt.Errorf("%s: no version matches %q", w.pkg, w.text)
	}
	return bestV, nil
}
