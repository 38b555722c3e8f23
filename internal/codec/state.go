// Package codec is regedge's implementation of the wire contract (docs/protocol.md):
// the 13-byte config state, update frames, bulk frames, config bus datagrams, the
// config dump and the X-Bun-* HTTP headers. It is pure Go with no I/O; the kernel
// programs in bpf/ are tested against it.
//
// All multi-byte integers are big-endian. Check* functions return a Reason and
// never allocate; Decode* functions return values only when the input passes
// every rule, and a typed *Error otherwise.
package codec

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// StateSize is the size of a serialized ConfigState.
const StateSize = 13

// State is the 13-byte config state of docs/protocol.md §1.
type State struct {
	Version      uint8
	RegistryHash uint32
	FeatureFlags uint32
	TerminalMode uint8
	Rows         uint8
	Cols         uint8
	Reserved     uint8
}

// DefaultState is the state of the seed document: 01 a1b2c3d4 00000007 02 18 50 00.
func DefaultState() State {
	return State{
		Version:      1,
		RegistryHash: 0xa1b2c3d4,
		FeatureFlags: 0x00000007,
		TerminalMode: TerminalRaw,
		Rows:         24,
		Cols:         80,
	}
}

// FieldID is a field's byte offset in the state, as used in frames.
type FieldID uint32

const (
	FieldVersion      FieldID = 0
	FieldRegistryHash FieldID = 1
	FieldFeatureFlags FieldID = 5
	FieldTerminalMode FieldID = 9
	FieldRows         FieldID = 10
	FieldCols         FieldID = 11
	FieldReserved     FieldID = 12
)

// Field describes one field of the state and its §1 rule: Min <= value <= Max.
// For featureFlags, Max 0x7ff is the rule "bits 11..31 must be 0".
type Field struct {
	Name  string
	ID    FieldID
	Width int // bytes
	Min   uint64
	Max   uint64
}

var fields = [...]Field{
	{"version", FieldVersion, 1, 1, 255},
	{"registryHash", FieldRegistryHash, 4, 0, 0xffffffff},
	{"featureFlags", FieldFeatureFlags, 4, 0, FeatureFlagsMask},
	{"terminalMode", FieldTerminalMode, 1, 0, TerminalPipe},
	{"rows", FieldRows, 1, 1, 255},
	{"cols", FieldCols, 1, 1, 255},
	{"reserved", FieldReserved, 1, 0, 0},
}

// fieldIndex maps a field id (byte offset 0..12) to its index in fields, or -1.
var fieldIndex = [StateSize]int8{0, 1, -1, -1, -1, 2, -1, -1, -1, 3, 4, 5, 6}

// Fields returns the field table in wire order.
func Fields() []Field { return append([]Field(nil), fields[:]...) }

// FieldByID returns the field with the given id.
func FieldByID(id FieldID) (Field, bool) {
	i := lookupField(uint32(id))
	if i < 0 {
		return Field{}, false
	}
	return fields[i], true
}

// FieldByName returns the field with the given name, ignoring case.
func FieldByName(name string) (Field, bool) {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return Field{}, false
}

func lookupField(id uint32) int8 {
	if id >= StateSize {
		return -1
	}
	return fieldIndex[id]
}

// Feature flag bits (§1).
const (
	FlagPremiumTypes          = 1 << 0
	FlagPrivateRegistry       = 1 << 1
	FlagDebug                 = 1 << 2
	FlagBetaAPI               = 1 << 3
	FlagDisableBinlinking     = 1 << 4
	FlagDisableIgnoreScripts  = 1 << 5
	FlagTerminalRaw           = 1 << 6
	FlagDisableIsolatedLinker = 1 << 7
	FlagTypesMycompany        = 1 << 8
	FlagMockS3                = 1 << 9
	FlagFastCache             = 1 << 10

	NumFeatureFlags  = 11
	FeatureFlagsMask = 1<<NumFeatureFlags - 1
)

var flagNames = [NumFeatureFlags]string{
	"PREMIUM_TYPES", "PRIVATE_REGISTRY", "DEBUG", "BETA_API", "DISABLE_BINLINKING",
	"DISABLE_IGNORE_SCRIPTS", "TERMINAL_RAW", "DISABLE_ISOLATED_LINKER",
	"TYPES_MYCOMPANY", "MOCK_S3", "FAST_CACHE",
}

// FlagName returns the name of feature flag bit, or "" if bit is not defined.
func FlagName(bit int) string {
	if bit < 0 || bit >= NumFeatureFlags {
		return ""
	}
	return flagNames[bit]
}

// FlagNames lists the names of the defined bits set in flags, lowest bit first,
// and "BIT_n" for set bits that §1 does not define.
func FlagNames(flags uint32) []string {
	var names []string
	for bit := 0; bit < 32; bit++ {
		if flags&(1<<bit) == 0 {
			continue
		}
		if bit < NumFeatureFlags {
			names = append(names, flagNames[bit])
		} else {
			names = append(names, fmt.Sprintf("BIT_%d", bit))
		}
	}
	return names
}

// FlagBit returns the bit of a feature flag name (case-insensitive) or of a
// decimal bit number.
func FlagBit(name string) (int, bool) {
	for i, n := range flagNames {
		if strings.EqualFold(n, name) {
			return i, true
		}
	}
	var bit int
	if _, err := fmt.Sscanf(name, "%d", &bit); err == nil && fmt.Sprint(bit) == name && bit >= 0 && bit < NumFeatureFlags {
		return bit, true
	}
	return 0, false
}

// Terminal modes (§1).
const (
	TerminalDisabled = 0
	TerminalCooked   = 1
	TerminalRaw      = 2
	TerminalPipe     = 3
)

var terminalNames = [...]string{"disabled", "cooked", "raw", "pipe"}

// TerminalModeName returns the name of a terminal mode, or "" for an invalid one.
func TerminalModeName(mode uint8) string {
	if int(mode) < len(terminalNames) {
		return terminalNames[mode]
	}
	return ""
}

// Get returns the value of the field with the given id (0 for an unknown id).
func (s State) Get(id FieldID) uint64 {
	switch id {
	case FieldVersion:
		return uint64(s.Version)
	case FieldRegistryHash:
		return uint64(s.RegistryHash)
	case FieldFeatureFlags:
		return uint64(s.FeatureFlags)
	case FieldTerminalMode:
		return uint64(s.TerminalMode)
	case FieldRows:
		return uint64(s.Rows)
	case FieldCols:
		return uint64(s.Cols)
	case FieldReserved:
		return uint64(s.Reserved)
	}
	return 0
}

// With returns s with one field set to v, after checking v against the field's
// §1 rule. On error s is returned unchanged.
func (s State) With(id FieldID, v uint64) (State, error) {
	i := lookupField(uint32(id))
	if i < 0 {
		return s, fault{reason: ReasonField, field: -1, detail: detFieldUnknown, got: uint64(id)}.err("state")
	}
	if f := checkFieldValue(i, v); f.reason != ReasonOK {
		return s, f.err("state")
	}
	return s.set(id, v), nil
}

// set stores v without checking; callers have checked it.
func (s State) set(id FieldID, v uint64) State {
	switch id {
	case FieldVersion:
		s.Version = uint8(v)
	case FieldRegistryHash:
		s.RegistryHash = uint32(v)
	case FieldFeatureFlags:
		s.FeatureFlags = uint32(v)
	case FieldTerminalMode:
		s.TerminalMode = uint8(v)
	case FieldRows:
		s.Rows = uint8(v)
	case FieldCols:
		s.Cols = uint8(v)
	case FieldReserved:
		s.Reserved = uint8(v)
	}
	return s
}

func checkFieldValue(i int8, v uint64) fault {
	f := &fields[i]
	if v < f.Min || v > f.Max {
		return fault{reason: ReasonValue, field: i, detail: detValueRange, got: v}
	}
	return fault{}
}

// Validate checks every rule of §1 and names the first field that breaks one.
func (s State) Validate() error {
	var d fault
	s.check(&d)
	return d.err("state")
}

// Valid reports whether s passes every rule of §1.
func (s State) Valid() bool { return s.check(nil) == ReasonOK }

// check is §1 on a decoded state; d, when not nil, receives the details.
func (s State) check(d *fault) Reason {
	// The common case (a valid state) is decided by these comparisons alone.
	if s.Version != 0 && s.FeatureFlags <= FeatureFlagsMask && s.TerminalMode <= TerminalPipe &&
		s.Rows != 0 && s.Cols != 0 && s.Reserved == 0 {
		return ReasonOK
	}
	for i := range fields {
		if f := checkFieldValue(int8(i), s.Get(fields[i].ID)); f.reason != ReasonOK {
			f.reason = ReasonState
			return fail(d, f)
		}
	}
	return ReasonOK
}

// checkStateBytes is §1 on the 13 wire bytes, without decoding them first.
func checkStateBytes(b *[StateSize]byte, d *fault) Reason {
	// featureFlags <= 0x7ff  <=>  bytes 5 and 6 are zero and byte 7 <= 7.
	if b[0] != 0 && b[5]|b[6] == 0 && b[7] <= FeatureFlagsMask>>8 && b[9] <= TerminalPipe &&
		b[10] != 0 && b[11] != 0 && b[12] == 0 {
		return ReasonOK
	}
	return stateOf(b).check(d)
}

// Bytes returns the 13-byte wire form of s.
func (s State) Bytes() [StateSize]byte {
	var b [StateSize]byte
	s.put(&b)
	return b
}

func (s *State) put(b *[StateSize]byte) {
	b[0] = s.Version
	binary.BigEndian.PutUint32(b[1:5], s.RegistryHash)
	binary.BigEndian.PutUint32(b[5:9], s.FeatureFlags)
	b[9] = s.TerminalMode
	b[10] = s.Rows
	b[11] = s.Cols
	b[12] = s.Reserved
}

// Append appends the 13-byte wire form of s to dst.
func (s *State) Append(dst []byte) []byte {
	n := len(dst)
	dst = grow(dst, StateSize)
	s.put((*[StateSize]byte)(dst[n:]))
	return dst
}

// stateOf reads a state from 13 bytes without checking it.
func stateOf(b *[StateSize]byte) State {
	return State{
		Version:      b[0],
		RegistryHash: binary.BigEndian.Uint32(b[1:5]),
		FeatureFlags: binary.BigEndian.Uint32(b[5:9]),
		TerminalMode: b[9],
		Rows:         b[10],
		Cols:         b[11],
		Reserved:     b[12],
	}
}

// StateFromBytes decodes a fixed 13-byte state and checks it against §1.
func StateFromBytes(b [StateSize]byte) (State, error) { return decodeState(&b) }

// DecodeState decodes exactly 13 bytes into a state that passes §1.
func DecodeState(b []byte) (State, error) {
	if len(b) != StateSize {
		return State{}, &Error{Reason: ReasonLength, What: "state", Detail: fmt.Sprintf("want %d bytes, got %d", StateSize, len(b))}
	}
	return decodeState((*[StateSize]byte)(b))
}

// DecodeStateInto is DecodeState into a caller's State, for hot paths: it
// writes the fields in place instead of returning a 7-field struct, which the
// compiler would build on the stack and copy. On failure *s is left as it was.
func DecodeStateInto(s *State, b []byte) error {
	if len(b) != StateSize {
		return &Error{Reason: ReasonLength, What: "state", Detail: fmt.Sprintf("want %d bytes, got %d", StateSize, len(b))}
	}
	p := (*[StateSize]byte)(b)
	var d fault
	if checkStateBytes(p, &d) != ReasonOK {
		return d.err("state")
	}
	s.Version = p[0]
	s.RegistryHash = binary.BigEndian.Uint32(p[1:5])
	s.FeatureFlags = binary.BigEndian.Uint32(p[5:9])
	s.TerminalMode, s.Rows, s.Cols, s.Reserved = p[9], p[10], p[11], p[12]
	return nil
}

func decodeState(b *[StateSize]byte) (State, error) {
	var d fault
	if checkStateBytes(b, &d) != ReasonOK {
		return State{}, d.err("state")
	}
	return stateOf(b), nil
}

// DumpSize is the length of a dump string: "0x" and 26 hex digits.
const DumpSize = 2 + 2*StateSize

// Dump returns the X-Bun-Config-Dump form of s, e.g. 0x01a1b2c3d40000000702185000.
func (s State) Dump() string {
	var buf [DumpSize]byte
	return string(s.AppendDump(buf[:0]))
}

// AppendDump appends the dump form of s to dst.
func (s State) AppendDump(dst []byte) []byte {
	b := s.Bytes()
	dst = append(dst, '0', 'x')
	return hex.AppendEncode(dst, b[:])
}

// String returns the dump form.
func (s State) String() string { return s.Dump() }

// SyntaxError reports text that is not in the form a value must take (a dump,
// a header value, a hex string).
type SyntaxError struct {
	What  string // "dump", "hex", the header's name
	Input string
	Rule  string // the form it must take
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("codec: %s %q: %s", e.What, truncate(e.Input, 64), e.Rule)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ParseDump parses a dump ("0x" and 26 hex digits, either case) into a state
// that passes §1. The error is a *SyntaxError for text of the wrong form and a
// codec *Error (reason state) for a state that breaks a rule.
func ParseDump(s string) (State, error) {
	var b [StateSize]byte
	if !parseDumpBytes(s, &b) {
		return State{}, &SyntaxError{What: "dump", Input: s, Rule: "want 0x and 26 hex digits"}
	}
	var d fault
	if checkStateBytes(&b, &d) != ReasonOK {
		return State{}, d.err("state")
	}
	return stateOf(&b), nil
}

func parseDumpBytes(s string, b *[StateSize]byte) bool {
	if len(s) != DumpSize || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return false
	}
	for i := 0; i < StateSize; i++ {
		hi, ok1 := unhex(s[2+2*i])
		lo, ok2 := unhex(s[3+2*i])
		if !ok1 || !ok2 {
			return false
		}
		b[i] = hi<<4 | lo
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ParseHex decodes a hex string as operators type it: an optional 0x prefix,
// either case, spaces, tabs and '·' separators ignored.
func ParseHex(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	if len(t) >= 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') {
		t = t[2:]
	}
	t = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\u00b7':
			return -1
		}
		return r
	}, t)
	b, err := hex.DecodeString(t)
	if err != nil {
		return nil, &SyntaxError{What: "hex", Input: s, Rule: "want an even number of hex digits"}
	}
	return b, nil
}
