// Package fleet keeps the edge caches of a fleet coherent: an edge that
// passes a write upstream (publish, unpublish, dist-tag change, deprecate)
// tells its peers "package X changed", and a peer that hears it marks its
// cached packuments and dist-tags of X stale, so its next request for them
// revalidates with the upstream.
//
// A hint is one UDP datagram carrying nothing but the package name
// (docs/protocol.md). It grants nothing: the worst a forged hint can do is
// cause a revalidation, which the receiver rate-limits per package and per
// source; so hints are not signed. Sending never waits on the network: the
// write path puts the name on a bounded queue and returns.
package fleet

import (
	"errors"
	"fmt"
)

// The hint datagram (docs/protocol.md, "Fleet revalidation hints"):
//
//	offset  size  field
//	0       4     magic "RGHN"
//	4       1     version, 1
//	5       1     kind, 1 (package changed)
//	6       1     name length N, 1..214
//	7       N     package name (npm's name rules, below)
//
// Nothing may follow the name.
const (
	HintVersion = 1
	kindChanged = 1
	headerLen   = 7
	// MaxNameLen is npm's bound on a package name.
	MaxNameLen = 214
	// MaxHintLen is the longest valid hint.
	MaxHintLen = headerLen + MaxNameLen
)

var magic = [4]byte{'R', 'G', 'H', 'N'}

// Reason says why a datagram is not a valid hint.
type Reason string

// The reasons DecodeHint gives.
const (
	ReasonLength  Reason = "length"  // shorter than a header, or not header+N bytes
	ReasonMagic   Reason = "magic"   // not "RGHN": not a hint at all
	ReasonVersion Reason = "version" // a hint of another version
	ReasonKind    Reason = "kind"    // a kind this version does not know
	ReasonName    Reason = "name"    // the name breaks npm's rules
)

// HintError is a datagram that is not a valid hint.
type HintError struct {
	Reason Reason
	Detail string
}

func (e *HintError) Error() string { return "fleet: hint: " + string(e.Reason) + ": " + e.Detail }

// ErrHint matches every *HintError (errors.Is).
var ErrHint = errors.New("fleet: hint")

func (e *HintError) Is(target error) bool { return target == ErrHint }

// AppendHint appends the hint for pkg to b. pkg must pass ValidName.
func AppendHint(b []byte, pkg string) ([]byte, error) {
	if err := ValidName(pkg); err != nil {
		return b, err
	}
	b = append(b, magic[:]...)
	b = append(b, HintVersion, kindChanged, byte(len(pkg)))
	return append(b, pkg...), nil
}

// DecodeHint returns the package a datagram names, or a *HintError.
func DecodeHint(b []byte) (string, error) {
	if len(b) < headerLen {
		return "", &HintError{ReasonLength, fmt.Sprintf("%d bytes, want at least %d", len(b), headerLen+1)}
	}
	if [4]byte(b[:4]) != magic {
		return "", &HintError{ReasonMagic, fmt.Sprintf("% x, want % x", b[:4], magic[:])}
	}
	if b[4] != HintVersion {
		return "", &HintError{ReasonVersion, fmt.Sprintf("%d, want %d", b[4], HintVersion)}
	}
	if b[5] != kindChanged {
		return "", &HintError{ReasonKind, fmt.Sprintf("%d, want %d", b[5], kindChanged)}
	}
	if n := int(b[6]); len(b) != headerLen+n {
		return "", &HintError{ReasonLength, fmt.Sprintf("name length %d in a %d-byte datagram, want %d bytes", n, len(b), headerLen+n)}
	}
	pkg := string(b[headerLen:])
	if err := ValidName(pkg); err != nil {
		return "", err
	}
	return pkg, nil
}

// ValidName checks a package name: 1..214 bytes, "name" or "@scope/name",
// each part made of the characters npm leaves unescaped in a URL
// (letters, digits and -._~!*'(), which old names still use) and not
// starting with a dot. So a name is always one path segment (or a scope
// and one segment) of the registry's URLs: it cannot reach another path.
func ValidName(pkg string) error {
	bad := func(format string, a ...any) error {
		return &HintError{ReasonName, fmt.Sprintf("%q: ", pkg) + fmt.Sprintf(format, a...)}
	}
	if len(pkg) == 0 || len(pkg) > MaxNameLen {
		return bad("%d bytes, want 1..%d", len(pkg), MaxNameLen)
	}
	name := pkg
	if pkg[0] == '@' {
		for i := 1; i < len(pkg); i++ {
			if pkg[i] == '/' {
				if err := validPart(pkg[1:i]); err != "" {
					return bad("scope: %s", err)
				}
				name = pkg[i+1:]
				break
			}
		}
		if name == pkg {
			return bad("a scope without a name, want @scope/name")
		}
	}
	if err := validPart(name); err != "" {
		return bad("%s", err)
	}
	return nil
}

func validPart(s string) string {
	if s == "" {
		return "empty"
	}
	if s[0] == '.' {
		return "starts with a dot"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~' || c == '!' || c == '*' || c == '\'' || c == '(' || c == ')':
		default:
			return fmt.Sprintf("byte 0x%02x is not allowed in a package name", c)
		}
	}
	return ""
}
