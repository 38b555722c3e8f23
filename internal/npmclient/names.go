package npmclient

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadName is the error of every package name refused by CheckName.
var ErrBadName = errors.New("not a valid npm package name")

// BadNameError is a package name from a registry or a package.json that
// npm's name rules refuse, with the package that asked for it.
type BadNameError struct {
	Name   string // as given
	Kind   string // "dependency", "alias target", "bundled dependency", "package"
	Wanted string // who asked: "a@1.0.0" or "package.json"
	Reason string
}

func (e *BadNameError) Error() string {
	return fmt.Sprintf("%s asks for the %s %q: %v: %s", e.Wanted, e.Kind, e.Name, ErrBadName, e.Reason)
}

func (e *BadNameError) Unwrap() error { return ErrBadName }

// maxNameLength is npm's limit on a package name.
const maxNameLength = 214

// CheckName says why name is not a package name npm would install, or ""
// when it is one. The rules are npm's (validate-npm-package-name, as npm
// applies them to existing packages): at most 214 characters, no leading
// dot or underscore, no space, only the characters encodeURIComponent leaves
// alone, "@scope/name" the only form with a slash; never node_modules or
// favicon.ico. Two rules are stricter than npm, because a name becomes a
// directory: no part may start with a dot ("@s/.." would be node_modules
// itself), and a scoped name has exactly one slash. Capital letters are
// accepted, as npm still installs the old packages that have them
// (JSONStream); they cannot change which directory a name reaches.
func CheckName(name string) string {
	switch {
	case name == "":
		return "empty"
	case len(name) > maxNameLength:
		return fmt.Sprintf("longer than %d characters", maxNameLength)
	case name[0] == '.':
		return "starts with a dot"
	case name[0] == '_':
		return "starts with an underscore"
	case name == "node_modules" || name == "favicon.ico":
		return "a reserved name"
	}
	if name[0] != '@' {
		if strings.Contains(name, "/") {
			return "has a slash but no @scope"
		}
		return checkNamePart(name)
	}
	scope, pkg, ok := strings.Cut(name[1:], "/")
	switch {
	case !ok:
		return "an @scope without /name"
	case scope == "" || pkg == "":
		return "an empty @scope or name"
	case strings.Contains(pkg, "/"):
		return "more than one slash"
	case scope[0] == '.' || pkg[0] == '.':
		return "a part starts with a dot"
	}
	if why := checkNamePart(scope); why != "" {
		return why
	}
	return checkNamePart(pkg)
}

// checkNamePart refuses what encodeURIComponent would escape.
func checkNamePart(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.!~*'()", c) >= 0:
		default:
			return fmt.Sprintf("character %q is not URL-safe", c)
		}
	}
	return ""
}

// checkNameFrom is CheckName as an error saying who asked.
func checkNameFrom(name, kind, wanted string) error {
	if why := CheckName(name); why != "" {
		return &BadNameError{Name: name, Kind: kind, Wanted: wanted, Reason: why}
	}
	return nil
}
