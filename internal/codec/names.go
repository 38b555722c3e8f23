package codec

import (
	"strconv"
	"strings"
)

// The text forms of codec values that tools read and print (regedge frame,
// config push): names belong with the values they name, so every tool spells
// them the same way.

// String names an ERROR frame's code (§2.1), or "unknown".
func (c ErrorCode) String() string {
	switch c {
	case ErrCodeBadLength:
		return "bad length"
	case ErrCodeBadChecksum:
		return "bad checksum"
	case ErrCodeUnknownType:
		return "unknown type"
	case ErrCodeInvalid:
		return "invalid field or value"
	case ErrCodeNotAllowed:
		return "not allowed"
	case ErrCodeStorage:
		return "storage (not persisted; retry)"
	}
	return "unknown"
}

// frameTypes are the types that have a name, in §2.1 order.
var frameTypes = [...]FrameType{TypeUpdate, TypeFeatureToggle, TypeResize, TypeHeartbeat, TypeAck, TypeError, TypeBulk}

// ParseFrameType reads a frame type: its name (UPDATE, FEATURE_TOGGLE, ...,
// any case), "toggle" for FEATURE_TOGGLE, or a number 0..255 (decimal, or
// with a 0x, 0o or 0b prefix). A number need not be a known type: ACK and
// tests name unknown ones too.
func ParseFrameType(s string) (FrameType, bool) {
	for _, t := range frameTypes {
		if strings.EqualFold(s, t.String()) {
			return t, true
		}
	}
	if strings.EqualFold(s, "toggle") {
		return TypeFeatureToggle, true
	}
	n, err := strconv.ParseUint(s, 0, 8)
	return FrameType(n), err == nil
}

// ParseEntry reads one field update as tools take it: the field by name (any
// case) or by numeric id, and the value as a decimal or 0x hex number. It
// checks the form only, not the rules of §1: a frame built from the entry is
// judged when it is checked, so tools can also build invalid frames on
// purpose. The error is a *SyntaxError naming what was wrong.
func ParseEntry(field, value string) (Entry, error) {
	var id FieldID
	name := field
	if f, ok := FieldByName(field); ok {
		id, name = f.ID, f.Name
	} else if n, err := strconv.ParseUint(field, 10, 32); err == nil {
		id = FieldID(n)
	} else {
		names := make([]string, 0, len(fields))
		for _, f := range fields {
			names = append(names, f.Name)
		}
		return Entry{}, &SyntaxError{What: "field", Input: field,
			Rule: "unknown: want one of " + strings.Join(names, ", ") + ", or a field id"}
	}
	v, err := strconv.ParseUint(value, 0, 64)
	if err != nil {
		return Entry{}, &SyntaxError{What: "value of " + name, Input: value, Rule: "want a decimal or 0x hex number"}
	}
	return Entry{Field: id, Value: v}, nil
}
