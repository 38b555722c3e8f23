package codec

import (
	"errors"
	"fmt"
)

// Reason is a verdict of docs/protocol.md §2.3. The numeric values are part of the
// contract with the kernel programs (bpf/include/reason.h): ReasonOK is 0 and the
// protocol reasons follow in the order the receiver checks them. Never renumber.
type Reason uint8

const (
	ReasonOK       Reason = 0
	ReasonLength   Reason = 1
	ReasonType     Reason = 2
	ReasonChecksum Reason = 3
	ReasonField    Reason = 4
	ReasonValue    Reason = 5
	ReasonState    Reason = 6
	ReasonVersion  Reason = 7

	// NumReasons is one past the last protocol reason.
	NumReasons = 8
)

var reasonWords = [NumReasons]string{"ok", "length", "type", "checksum", "field", "value", "state", "version"}

// String returns the reason word used in verdicts, metrics and `regedge frame check`.
func (r Reason) String() string {
	if int(r) < len(reasonWords) {
		return reasonWords[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// ParseReason maps a reason word back to its Reason.
func ParseReason(word string) (Reason, bool) {
	for i, w := range reasonWords {
		if w == word {
			return Reason(i), true
		}
	}
	return 0, false
}

// Error is the typed error of every decoder in this package. Callers branch on
// Reason (or with errors.Is against the Err* sentinels); the other fields say
// what failed for humans and logs.
type Error struct {
	Reason Reason
	What   string // "frame", "bulk", "datagram", "state"
	Field  string // the field's name, when one is involved
	Entry  int    // 1-based bulk entry, 0 when not in a bulk frame
	Detail string // why, e.g. "want 0x0a, got 0x0b"
}

func (e *Error) Error() string {
	s := "codec: " + e.What + ": " + e.Reason.String()
	if e.Entry > 0 {
		s += fmt.Sprintf(": entry %d", e.Entry)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, codec.ErrChecksum) true for any checksum failure.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.What == "" && t.Reason == e.Reason
}

// Sentinels for errors.Is; they carry only a reason.
var (
	ErrLength   = &Error{Reason: ReasonLength}
	ErrType     = &Error{Reason: ReasonType}
	ErrChecksum = &Error{Reason: ReasonChecksum}
	ErrField    = &Error{Reason: ReasonField}
	ErrValue    = &Error{Reason: ReasonValue}
	ErrState    = &Error{Reason: ReasonState}
	ErrVersion  = &Error{Reason: ReasonVersion}
)

// ReasonOf returns the verdict carried by err: ReasonOK for nil, the Reason of a
// codec *Error, and ok=false for any other error.
func ReasonOf(err error) (r Reason, ok bool) {
	if err == nil {
		return ReasonOK, true
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Reason, true
	}
	return 0, false
}

// fault is the allocation-free record of a failed check. The Check* functions
// return only its reason; the Decode* functions turn it into an *Error.
type fault struct {
	reason Reason
	field  int8 // index into fields, -1 for none
	entry  int8 // 1-based bulk entry, 0 for none
	detail uint8
	want   uint64
	got    uint64
}

// Detail kinds of a fault, rendered by (fault).err.
const (
	detNone uint8 = iota
	detLenFixed
	detLenBulk
	detLenDatagram
	detType
	detChecksum
	detFieldUnknown
	detFieldForType
	detValueRange
	detValuePad
	detValueToggle
	detValueResize
	detValueZero
	detErrCode
	detValueErrMsg
	detVersion
	detLenDatagramFrame
	detLenDatagramBulk
)

func (f fault) err(what string) error {
	if f.reason == ReasonOK {
		return nil
	}
	e := &Error{Reason: f.reason, What: what, Entry: int(f.entry)}
	if f.field >= 0 && int(f.field) < len(fields) {
		e.Field = fields[f.field].Name
	}
	switch f.detail {
	case detLenFixed:
		e.Detail = fmt.Sprintf("want 14 bytes, got %d", f.got)
	case detLenBulk:
		e.Detail = fmt.Sprintf("want 2+13N bytes with 1 <= N <= %d, got %d", MaxBulkEntries, f.got)
	case detLenDatagram:
		e.Detail = fmt.Sprintf("want at least %d bytes, got %d", StateSize+FixedFrameSize, f.got)
	case detType:
		e.Detail = fmt.Sprintf("unknown frame type 0x%02x", f.got)
	case detChecksum:
		e.Detail = fmt.Sprintf("want 0x%02x, got 0x%02x", f.want, f.got)
	case detFieldUnknown:
		e.Detail = fmt.Sprintf("unknown field id %d", f.got)
	case detFieldForType:
		e.Detail = fmt.Sprintf("want field id %d for this type, got %d", f.want, f.got)
	case detValueRange:
		fd := fields[f.field]
		e.Detail = fmt.Sprintf("%d is outside %d..%d", f.got, fd.Min, fd.Max)
	case detValuePad:
		e.Detail = fmt.Sprintf("pad byte must be 0, got 0x%02x", f.got)
	case detValueToggle:
		e.Detail = fmt.Sprintf("toggle value 0x%x: bit must be 0..%d", f.got, NumFeatureFlags-1)
	case detValueResize:
		e.Detail = fmt.Sprintf("resize value 0x%x: want (rows<<16)|cols, each 1..255, other bits 0", f.got)
	case detValueZero:
		e.Detail = fmt.Sprintf("value must be 0, got 0x%x", f.got)
	case detErrCode:
		e.Detail = fmt.Sprintf("unknown error code %d", f.got)
	case detValueErrMsg:
		e.Detail = fmt.Sprintf("error message 0x%016x: want printable ASCII, zero-padded", f.got)
	case detLenDatagramFrame:
		e.Detail = fmt.Sprintf("want %d bytes after the state (the frame), or %d (the frame and a %d-byte trailer), got %d",
			FixedFrameSize, FixedFrameSize+TrailerSize, TrailerSize, f.got)
	case detLenDatagramBulk:
		e.Detail = fmt.Sprintf("want 2+13N bytes after the state (1 <= N <= %d), optionally followed by a %d-byte trailer, got %d",
			MaxBulkEntries, TrailerSize, f.got)
	case detVersion:
		e.Detail = fmt.Sprintf("version %d is not supported", f.got)
	}
	return e
}
