package fleet

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestHintRoundTrip(t *testing.T) {
	for _, pkg := range []string{"a", "peers-hello", "@mycompany/hello", "JSONStream", "lodash.merge", "@a/b", "x_y~z", "it's(ok)*!", strings.Repeat("n", MaxNameLen)} {
		b, err := AppendHint(nil, pkg)
		if err != nil {
			t.Fatalf("%q: %v", pkg, err)
		}
		if len(b) != headerLen+len(pkg) || !bytes.HasPrefix(b, []byte("RGHN\x01\x01")) {
			t.Fatalf("%q: % x", pkg, b)
		}
		got, err := DecodeHint(b)
		if err != nil || got != pkg {
			t.Fatalf("%q: decoded %q, %v", pkg, got, err)
		}
	}
}

// The wire bytes of docs/protocol.md's example.
func TestHintBytes(t *testing.T) {
	b, _ := AppendHint(nil, "@acme/x")
	want := []byte{'R', 'G', 'H', 'N', 1, 1, 7, '@', 'a', 'c', 'm', 'e', '/', 'x'}
	if !bytes.Equal(b, want) {
		t.Fatalf("% x, want % x", b, want)
	}
}

func TestDecodeHintRefuses(t *testing.T) {
	good, _ := AppendHint(nil, "left-pad")
	with := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	hint := func(name string) []byte {
		return append([]byte{'R', 'G', 'H', 'N', 1, 1, byte(len(name))}, name...)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want Reason
	}{
		{"empty", nil, ReasonLength},
		{"header only, name length 0", []byte("RGHN\x01\x01\x00"), ReasonName},
		{"six bytes", good[:6], ReasonLength},
		{"name cut short", good[:len(good)-1], ReasonLength},
		{"a byte after the name", append(bytes.Clone(good), 'x'), ReasonLength},
		{"two hints in one datagram", append(bytes.Clone(good), good...), ReasonLength},
		{"another magic", with(0, 'r'), ReasonMagic},
		{"a config bus datagram", []byte{0x01, 0xa1, 0xb2, 0xc3, 0xd4, 0, 0, 0, 7, 2, 24, 80, 0}, ReasonMagic},
		{"version 2", with(4, 2), ReasonVersion},
		{"version 0", with(4, 0), ReasonVersion},
		{"kind 2", with(5, 2), ReasonKind},
		{"a path", hint("../etc/passwd"), ReasonName},
		{"an escaped slash", hint("@scope%2fname"), ReasonName},
		{"two slashes", hint("@a/b/c"), ReasonName},
		{"a slash without a scope", hint("a/b"), ReasonName},
		{"a scope alone", hint("@scope"), ReasonName},
		{"an empty scope", hint("@/name"), ReasonName},
		{"an empty name", hint("@scope/"), ReasonName},
		{"a leading dot", hint(".bin"), ReasonName},
		{"a scoped leading dot", hint("@s/.x"), ReasonName},
		{"a space", hint("left pad"), ReasonName},
		{"a NUL", hint("left\x00pad"), ReasonName},
		{"a query", hint("left-pad?write=1"), ReasonName},
		{"a non-ASCII byte", hint("caf\xc3\xa9"), ReasonName},
		{"215 bytes", append([]byte{'R', 'G', 'H', 'N', 1, 1, 215}, strings.Repeat("n", 215)...), ReasonName},
	} {
		pkg, err := DecodeHint(c.b)
		var he *HintError
		if !errors.As(err, &he) || he.Reason != c.want || pkg != "" || !errors.Is(err, ErrHint) {
			t.Errorf("%s: got %q, %v; want reason %s", c.name, pkg, err, c.want)
		}
	}
}

func TestAppendHintRefusesBadNames(t *testing.T) {
	for _, pkg := range []string{"", "a/b", strings.Repeat("n", MaxNameLen+1), "%2e%2e"} {
		if b, err := AppendHint([]byte("keep"), pkg); err == nil || string(b) != "keep" {
			t.Errorf("%q: %q, %v", pkg, b, err)
		}
	}
}

// FuzzDecodeHint: the decoder never panics; what it accepts is exactly
// what the encoder writes for that name, and a name that stays one path
// segment (or scope and segment) of a registry URL.
func FuzzDecodeHint(f *testing.F) {
	for _, pkg := range []string{"left-pad", "@mycompany/hello", strings.Repeat("n", MaxNameLen)} {
		b, _ := AppendHint(nil, pkg)
		f.Add(b)
	}
	f.Add([]byte("RGHN\x01\x01\x00"))
	f.Add([]byte("RGHN\x02\x01\x01a"))
	f.Add([]byte("RGHN\x01\x01\x03a/b"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		pkg, err := DecodeHint(b)
		if err != nil {
			var he *HintError
			if !errors.As(err, &he) || pkg != "" {
				t.Fatalf("error %v (%T) with %q", err, err, pkg)
			}
			return
		}
		again, err := AppendHint(nil, pkg)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("%q decodes from % x but encodes to % x (%v)", pkg, b, again, err)
		}
		parts := strings.Split(pkg, "/")
		if len(parts) > 2 || len(parts) == 2 && !strings.HasPrefix(parts[0], "@") || strings.ContainsAny(pkg, "%?#\\ ") {
			t.Fatalf("accepted %q", pkg)
		}
		for _, p := range parts {
			if p == "" || p == "@" || strings.HasPrefix(p, ".") {
				t.Fatalf("accepted %q", pkg)
			}
		}
	})
}
