package codec

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"iter"
	"strconv"
)

// The X-Bun-* headers of docs/protocol.md §4.1, in the canonical form net/http uses
// as map keys (so X-Bun-Request-ID is spelt X-Bun-Request-Id here; header names
// are case-insensitive on the wire).
const (
	HeaderConfigVersion = "X-Bun-Config-Version"
	HeaderRegistryHash  = "X-Bun-Registry-Hash"
	HeaderFeatureFlags  = "X-Bun-Feature-Flags"
	HeaderTerminalMode  = "X-Bun-Terminal-Mode"
	HeaderTerminalRows  = "X-Bun-Terminal-Rows"
	HeaderTerminalCols  = "X-Bun-Terminal-Cols"
	HeaderConfigDump    = "X-Bun-Config-Dump"
	HeaderProxyToken    = "X-Bun-Proxy-Token"
	HeaderRequestID     = "X-Bun-Request-Id"
)

// stateHeaders are the headers that carry one field each, in §4.1 order.
var stateHeaders = [...]struct {
	name  string
	field FieldID
	hex   bool // "0x" + 8 hex digits; otherwise decimal
}{
	{HeaderConfigVersion, FieldVersion, false},
	{HeaderRegistryHash, FieldRegistryHash, true},
	{HeaderFeatureFlags, FieldFeatureFlags, true},
	{HeaderTerminalMode, FieldTerminalMode, false},
	{HeaderTerminalRows, FieldRows, false},
	{HeaderTerminalCols, FieldCols, false},
}

const numBlockHeaders = len(stateHeaders) + 1 // + the dump

// HeaderBlock holds the config headers of one state, rendered once, so that
// putting them on a request is a copy: All yields pre-built values to
// assign and AppendWire copies one pre-built byte block. Build one per state change, not
// per request. A HeaderBlock is immutable and safe for concurrent use.
type HeaderBlock struct {
	state  State
	names  [numBlockHeaders]string
	values [numBlockHeaders][]string // each of length and capacity 1
	wire   []byte                    // "Name: value\r\n" for every header
}

// NewHeaderBlock renders the config headers of s.
func NewHeaderBlock(s State) *HeaderBlock {
	b := &HeaderBlock{state: s}
	for i, h := range stateHeaders {
		b.names[i] = h.name
		b.values[i] = []string{formatHeaderValue(h.hex, s.Get(h.field))}
	}
	b.names[numBlockHeaders-1] = HeaderConfigDump
	b.values[numBlockHeaders-1] = []string{s.Dump()}
	for i := range b.names {
		b.wire = append(b.wire, b.names[i]...)
		b.wire = append(b.wire, ": "...)
		b.wire = append(b.wire, b.values[i][0]...)
		b.wire = append(b.wire, "\r\n"...)
	}
	return b
}

func formatHeaderValue(isHex bool, v uint64) string {
	if isHex {
		return fmt.Sprintf("0x%08x", v)
	}
	return strconv.FormatUint(v, 10)
}

// State returns the state the block was rendered from.
func (b *HeaderBlock) State() State { return b.state }

// All yields each config header's name (canonical, as net/http keys its
// maps) and its value, a one-element slice. The slices are shared by every
// request the block serves: a caller may put them into a header map as they
// are, and replace or delete them there, but must not write into them.
func (b *HeaderBlock) All() iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		for i := range b.names {
			if !yield(b.names[i], b.values[i]) {
				return
			}
		}
	}
}

// AppendWire appends the headers in HTTP/1.1 wire form ("Name: value\r\n" each).
func (b *HeaderBlock) AppendWire(dst []byte) []byte { return append(dst, b.wire...) }

// HeaderError reports a config header that is malformed, repeated, disagrees
// with the dump, or gives a state that breaks a rule of §1. The proxy answers
// it with 400 and a JSON body naming Header and Rule.
type HeaderError struct {
	Header string
	Value  string
	Rule   string
}

func (e *HeaderError) Error() string {
	return fmt.Sprintf("codec: header %s %q: %s", e.Header, truncate(e.Value, 64), e.Rule)
}

// ExtractHeadersFunc assembles the state a request's config headers
// describe (§4.1). get returns the first value of a header (names as the
// Header* constants; a caller matches them case-insensitively, as HTTP does)
// and how often it appears. When X-Bun-Config-Dump is present it defines the
// state and every individual header present must agree with it. Without a
// dump, a field whose header is absent takes its value from def, so a
// request with no config headers gets def. The result passes §1; anything
// else is a *HeaderError. The codec knows no transport: each front end
// passes its own header lookup.
func ExtractHeadersFunc(get func(name string) (first string, n int), def State) (State, error) {
	s := def
	dump, n := get(HeaderConfigDump)
	haveDump := n > 0
	if haveDump {
		if n > 1 {
			return def, &HeaderError{Header: HeaderConfigDump, Value: dump, Rule: "must appear once"}
		}
		var b [StateSize]byte
		if !parseDumpBytes(dump, &b) {
			return def, &HeaderError{Header: HeaderConfigDump, Value: dump, Rule: "must be 0x and 26 hex digits"}
		}
		var f fault
		if checkStateBytes(&b, &f) != ReasonOK {
			return def, &HeaderError{Header: HeaderConfigDump, Value: dump, Rule: ruleOf(f.field)}
		}
		s = stateOf(&b)
	}
	for i := range stateHeaders {
		sh := &stateHeaders[i]
		val, n := get(sh.name)
		if n == 0 {
			continue
		}
		if n > 1 {
			return def, &HeaderError{Header: sh.name, Value: val, Rule: "must appear once"}
		}
		v, ok := parseHeaderValue(sh.hex, val)
		if !ok {
			rule := "must be a decimal number without sign or leading zeros"
			if sh.hex {
				rule = "must be 0x and 8 hex digits"
			}
			return def, &HeaderError{Header: sh.name, Value: val, Rule: rule}
		}
		fi := lookupField(uint32(sh.field))
		if haveDump {
			if v != s.Get(sh.field) {
				return def, &HeaderError{Header: sh.name, Value: val, Rule: "disagrees with " + HeaderConfigDump}
			}
			continue
		}
		if f := checkFieldValue(fi, v); f.reason != ReasonOK {
			return def, &HeaderError{Header: sh.name, Value: val, Rule: ruleOf(fi)}
		}
		s = s.set(sh.field, v)
	}
	if !haveDump {
		// Fields not given in headers came from def; it must be valid too.
		var f fault
		if s.check(&f) != ReasonOK {
			return def, &HeaderError{Header: "default state", Value: s.Dump(), Rule: ruleOf(f.field)}
		}
	}
	return s, nil
}

// ruleOf states the §1 rule of field index i.
func ruleOf(i int8) string {
	if i < 0 || int(i) >= len(fields) {
		return "state breaks a rule of docs/protocol.md §1"
	}
	f := &fields[i]
	switch f.ID {
	case FieldFeatureFlags:
		return "featureFlags bits 11..31 must be 0"
	case FieldReserved:
		return "reserved must be 0"
	}
	return fmt.Sprintf("%s must be %d..%d", f.Name, f.Min, f.Max)
}

// parseHeaderValue parses "0x" + exactly 8 hex digits (either case) or a
// canonical decimal of at most 10 digits.
func parseHeaderValue(isHex bool, s string) (uint64, bool) {
	if isHex {
		if len(s) != 10 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
			return 0, false
		}
		var v uint64
		for i := 2; i < 10; i++ {
			d, ok := unhex(s[i])
			if !ok {
				return 0, false
			}
			v = v<<4 | uint64(d)
		}
		return v, true
	}
	if len(s) == 0 || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// RequestIDSize is the length of a request ID: 16 hex digits.
const RequestIDSize = 16

// NewRequestID returns 16 lowercase hex digits from crypto/rand.
func NewRequestID() string {
	var buf [RequestIDSize]byte
	return string(AppendRequestID(buf[:0]))
}

// AppendRequestID appends a new request ID to dst.
func AppendRequestID(dst []byte) []byte {
	var r [RequestIDSize / 2]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails on supported platforms (Go 1.24+)
	return hex.AppendEncode(dst, r[:])
}

// ValidRequestID reports whether s is 16 hex digits (either case, as receivers accept).
func ValidRequestID(s string) bool {
	if len(s) != RequestIDSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		if _, ok := unhex(s[i]); !ok {
			return false
		}
	}
	return true
}
