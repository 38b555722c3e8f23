package codec

import (
	"encoding/binary"
	"fmt"
)

// FrameType is byte 0 of a frame (§2.1, §2.2).
type FrameType uint8

const (
	TypeUpdate        FrameType = 0x01
	TypeFeatureToggle FrameType = 0x02
	TypeResize        FrameType = 0x04
	TypeHeartbeat     FrameType = 0x05
	TypeAck           FrameType = 0x06
	TypeError         FrameType = 0x07
	TypeBulk          FrameType = 0x20
)

// String returns the protocol name of the type.
func (t FrameType) String() string {
	switch t {
	case TypeUpdate:
		return "UPDATE"
	case TypeFeatureToggle:
		return "FEATURE_TOGGLE"
	case TypeResize:
		return "RESIZE"
	case TypeHeartbeat:
		return "HEARTBEAT"
	case TypeAck:
		return "ACK"
	case TypeError:
		return "ERROR"
	case TypeBulk:
		return "BULK"
	}
	return fmt.Sprintf("TYPE_0x%02x", uint8(t))
}

// Acked reports whether a frame of this type changes state and is answered
// with an ACK; only these may be named by an ACK frame's field id.
func (t FrameType) Acked() bool {
	return t == TypeUpdate || t == TypeFeatureToggle || t == TypeResize || t == TypeBulk
}

// ErrorCode is an ERROR frame's field id (§2.1).
type ErrorCode uint32

const (
	ErrCodeBadLength   ErrorCode = 1
	ErrCodeBadChecksum ErrorCode = 2
	ErrCodeUnknownType ErrorCode = 3
	ErrCodeInvalid     ErrorCode = 4
	ErrCodeNotAllowed  ErrorCode = 5
	// ErrCodeStorage: the change was valid but the agent could not persist
	// it (disk full, state directory not writable); nothing changed and a
	// sender retries.
	ErrCodeStorage ErrorCode = 6
)

// ErrorCodeFor maps a verdict to the ERROR code a receiver answers with.
func ErrorCodeFor(r Reason) ErrorCode {
	switch r {
	case ReasonLength:
		return ErrCodeBadLength
	case ReasonChecksum:
		return ErrCodeBadChecksum
	case ReasonType:
		return ErrCodeUnknownType
	}
	return ErrCodeInvalid
}

const (
	// FixedFrameSize is the size of every frame but BULK.
	FixedFrameSize = 14
	// BulkEntrySize is the size of one BULK entry: field id, value, pad.
	BulkEntrySize = 13
	// MaxBulkEntries is the most entries one BULK frame carries.
	MaxBulkEntries = 16
	// MaxFrameSize is the size of the largest frame, a BULK of 16 entries.
	MaxFrameSize = 2 + BulkEntrySize*MaxBulkEntries
)

// BulkSize returns the wire size of a BULK frame of n entries.
func BulkSize(n int) int { return 2 + BulkEntrySize*n }

// Entry is one field update of a BULK frame.
type Entry struct {
	Field FieldID
	Value uint64
}

// Frame is a decoded frame. Fixed frames use Field and Value; a BULK frame
// uses Entries[:N]. The fixed-size array keeps decoding allocation-free.
type Frame struct {
	Type    FrameType
	Field   uint32 // field id, acknowledged type or error code, by Type
	Value   uint64
	N       int
	Entries [MaxBulkEntries]Entry
}

// Update returns an UPDATE frame for one field.
func Update(id FieldID, v uint64) Frame {
	return Frame{Type: TypeUpdate, Field: uint32(id), Value: v}
}

// Toggle returns a FEATURE_TOGGLE frame for one feature flag bit.
func Toggle(bit int, on bool) Frame {
	v := uint64(bit) << 1
	if on {
		v |= 1
	}
	return Frame{Type: TypeFeatureToggle, Field: uint32(FieldFeatureFlags), Value: v}
}

// Resize returns a RESIZE frame.
func Resize(rows, cols uint8) Frame {
	return Frame{Type: TypeResize, Value: uint64(rows)<<16 | uint64(cols)}
}

// Heartbeat returns a HEARTBEAT frame carrying the sender's clock in ms since the epoch.
func Heartbeat(unixMilli int64) Frame {
	return Frame{Type: TypeHeartbeat, Value: uint64(unixMilli)}
}

// Ack returns the ACK of a frame of type t.
func Ack(t FrameType) Frame {
	return Frame{Type: TypeAck, Field: uint32(t)}
}

// ErrorFrame returns an ERROR frame. msg is cut to 8 bytes; bytes that are not
// printable ASCII become '?', so the frame always passes the checks.
func ErrorFrame(code ErrorCode, msg string) Frame {
	var v uint64
	for i := 0; i < 8 && i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		v |= uint64(c) << (56 - 8*i)
	}
	return Frame{Type: TypeError, Field: uint32(code), Value: v}
}

// Bulk returns a BULK frame of the given entries; more than MaxBulkEntries is an error.
func Bulk(entries ...Entry) (Frame, error) {
	if len(entries) == 0 || len(entries) > MaxBulkEntries {
		return Frame{}, &Error{Reason: ReasonLength, What: "bulk", Detail: fmt.Sprintf("want 1..%d entries, got %d", MaxBulkEntries, len(entries))}
	}
	f := Frame{Type: TypeBulk, N: len(entries)}
	copy(f.Entries[:], entries)
	return f, nil
}

// ResizeValue splits a RESIZE value into rows and cols.
func ResizeValue(v uint64) (rows, cols uint8) { return uint8(v >> 16), uint8(v) }

// ToggleValue splits a FEATURE_TOGGLE value into bit and enabled.
func ToggleValue(v uint64) (bit int, on bool) { return int(v >> 1), v&1 == 1 }

// ErrorMessage returns an ERROR frame's message text.
func (f *Frame) ErrorMessage() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], f.Value)
	n := 0
	for n < 8 && b[n] != 0 {
		n++
	}
	return string(b[:n])
}

// Size returns the frame's wire size.
func (f *Frame) Size() int {
	if f.Type == TypeBulk {
		return BulkSize(f.N)
	}
	return FixedFrameSize
}

// Append appends the wire form of f to dst, checksum included. It encodes what
// it is given; Check validates.
func (f *Frame) Append(dst []byte) []byte {
	start := len(dst)
	if f.Type == TypeBulk {
		dst = append(dst, byte(TypeBulk))
		for i := 0; i < f.N && i < MaxBulkEntries; i++ {
			e := &f.Entries[i]
			dst = binary.BigEndian.AppendUint32(dst, uint32(e.Field))
			dst = binary.BigEndian.AppendUint64(dst, e.Value)
			dst = append(dst, 0)
		}
		return append(dst, xorBytes(dst[start:]))
	}
	// Fixed frames are written in place: one capacity check, no appends.
	dst = grow(dst, FixedFrameSize)
	p := (*[FixedFrameSize]byte)(dst[start:])
	p[0] = byte(f.Type)
	binary.BigEndian.PutUint32(p[1:5], f.Field)
	binary.BigEndian.PutUint64(p[5:13], f.Value)
	p[13] = xor13(p)
	return dst
}

// grow extends dst by n bytes, reallocating only when its capacity is short.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		dst = append(dst[:cap(dst)], make([]byte, n)...)[:len(dst)]
	}
	return dst[:len(dst)+n]
}

// Bytes returns the wire form of f.
func (f *Frame) Bytes() []byte { return f.Append(make([]byte, 0, f.Size())) }

// Check encodes f and checks the result as a receiver would (§2.3).
func (f *Frame) Check() error {
	var buf [MaxFrameSize]byte
	if f.Type == TypeBulk && (f.N < 1 || f.N > MaxBulkEntries) {
		return fault{reason: ReasonLength, field: -1, detail: detLenBulk, got: uint64(BulkSize(f.N))}.err("bulk")
	}
	b := f.Append(buf[:0])
	var d fault
	checkFrame(b, &d)
	return d.err(frameWhat(b))
}

func xorBytes(b []byte) byte {
	var x uint64
	for len(b) >= 8 {
		x ^= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	x ^= x >> 32
	x ^= x >> 16
	x ^= x >> 8
	c := byte(x)
	for _, v := range b {
		c ^= v
	}
	return c
}

// xor13 is xorBytes of the first 13 bytes of a fixed frame, in three loads.
func xor13(b *[FixedFrameSize]byte) byte {
	x := binary.LittleEndian.Uint64(b[0:8]) ^ uint64(binary.LittleEndian.Uint32(b[8:12]))
	x ^= x >> 32
	x ^= x >> 16
	x ^= x >> 8
	return byte(x) ^ b[12]
}

// CheckFrame returns the §2.3 verdict for one frame. It never allocates.
func CheckFrame(b []byte) Reason { return checkFrame(b, nil) }

// DecodeFrame decodes a frame that passes every check of §2.3. On failure the
// returned Frame is zero and the error is a *Error naming the reason.
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	if err := DecodeFrameInto(&f, b); err != nil {
		return Frame{}, err
	}
	return f, nil
}

// DecodeFrameInto is DecodeFrame into a caller's Frame, for hot paths. On
// failure *f is left as it was.
func DecodeFrameInto(f *Frame, b []byte) error {
	var d fault
	if checkFrame(b, &d) != ReasonOK {
		return d.err(frameWhat(b))
	}
	decodeChecked(f, b)
	return nil
}

// decodeChecked decodes a frame that checkFrame has passed.
func decodeChecked(f *Frame, b []byte) {
	if FrameType(b[0]) == TypeBulk {
		n := (len(b) - 2) / BulkEntrySize
		f.Type, f.Field, f.Value, f.N = TypeBulk, 0, 0, n
		for i := 0; i < n; i++ {
			e := b[1+i*BulkEntrySize:]
			f.Entries[i] = Entry{Field: FieldID(binary.BigEndian.Uint32(e)), Value: binary.BigEndian.Uint64(e[4:])}
		}
		return
	}
	f.Type = FrameType(b[0])
	f.Field = binary.BigEndian.Uint32(b[1:5])
	f.Value = binary.BigEndian.Uint64(b[5:13])
	f.N = 0
}

func frameWhat(b []byte) string {
	if len(b) > 0 && FrameType(b[0]) == TypeBulk {
		return "bulk"
	}
	return "frame"
}

// fail records f in d (when the caller wants details) and returns its reason.
// Failure paths only; the success paths return ReasonOK and touch nothing.
func fail(d *fault, f fault) Reason {
	if d != nil {
		*d = f
	}
	return f.reason
}

// fixedTypes marks the type bytes of fixed (14-byte) frames.
var fixedTypes = [256]bool{
	TypeUpdate: true, TypeFeatureToggle: true, TypeResize: true,
	TypeHeartbeat: true, TypeAck: true, TypeError: true,
}

// checkFrame is §2.3: length, type, checksum, field, value. d, when not nil,
// receives the details of a failure.
func checkFrame(b []byte, d *fault) Reason {
	if len(b) != FixedFrameSize {
		if len(b) > 0 && FrameType(b[0]) == TypeBulk {
			return checkBulk(b, d)
		}
		return fail(d, fault{reason: ReasonLength, field: -1, detail: detLenFixed, got: uint64(len(b))})
	}
	t := FrameType(b[0])
	if !fixedTypes[t] {
		if t == TypeBulk {
			return checkBulk(b, d)
		}
		return fail(d, fault{reason: ReasonType, field: -1, detail: detType, got: uint64(t)})
	}
	if x := xor13((*[FixedFrameSize]byte)(b)); x != b[13] {
		return fail(d, fault{reason: ReasonChecksum, field: -1, detail: detChecksum, want: uint64(x), got: uint64(b[13])})
	}
	id := binary.BigEndian.Uint32(b[1:5])
	v := binary.BigEndian.Uint64(b[5:13])
	if t == TypeUpdate {
		return checkEntry(id, v, 0, d)
	}
	return checkControl(t, id, v, d)
}

// checkControl checks field and value of the fixed frames other than UPDATE.
func checkControl(t FrameType, id uint32, v uint64, d *fault) Reason {
	switch t {
	case TypeFeatureToggle:
		if id != uint32(FieldFeatureFlags) {
			return fail(d, fault{reason: ReasonField, field: -1, detail: detFieldForType, want: uint64(FieldFeatureFlags), got: uint64(id)})
		}
		if v>>1 >= NumFeatureFlags {
			return fail(d, fault{reason: ReasonValue, field: 2, detail: detValueToggle, got: v})
		}
	case TypeResize:
		if id != 0 {
			return fail(d, fault{reason: ReasonField, field: -1, detail: detFieldForType, want: 0, got: uint64(id)})
		}
		if v&^0x00ff00ff != 0 || v&0xff == 0 || v&0xff0000 == 0 {
			return fail(d, fault{reason: ReasonValue, field: -1, detail: detValueResize, got: v})
		}
	case TypeHeartbeat:
		if id != 0 {
			return fail(d, fault{reason: ReasonField, field: -1, detail: detFieldForType, want: 0, got: uint64(id)})
		}
	case TypeAck:
		if id > 0xff || !FrameType(id).Acked() {
			return fail(d, fault{reason: ReasonField, field: -1, detail: detFieldForType, got: uint64(id)})
		}
		if v != 0 {
			return fail(d, fault{reason: ReasonValue, field: -1, detail: detValueZero, got: v})
		}
	case TypeError:
		if id < uint32(ErrCodeBadLength) || id > uint32(ErrCodeStorage) {
			return fail(d, fault{reason: ReasonField, field: -1, detail: detErrCode, got: uint64(id)})
		}
		if !validErrorMessage(v) {
			return fail(d, fault{reason: ReasonValue, field: -1, detail: detValueErrMsg, got: v})
		}
	}
	return ReasonOK
}

// validErrorMessage: up to 8 printable ASCII bytes, left-aligned, zero-padded.
func validErrorMessage(v uint64) bool {
	padding := false
	for shift := 56; shift >= 0; shift -= 8 {
		c := byte(v >> shift)
		switch {
		case c == 0:
			padding = true
		case padding || c < 0x20 || c > 0x7e:
			return false
		}
	}
	return true
}

// checkEntry applies the UPDATE rules to one field id and value; entry is the
// 1-based bulk entry or 0.
func checkEntry(id uint32, v uint64, entry int8, d *fault) Reason {
	i := lookupField(id)
	if i < 0 {
		return fail(d, fault{reason: ReasonField, field: -1, entry: entry, detail: detFieldUnknown, got: uint64(id)})
	}
	if f := &fields[i]; v < f.Min || v > f.Max {
		return fail(d, fault{reason: ReasonValue, field: i, entry: entry, detail: detValueRange, got: v})
	}
	return ReasonOK
}

func checkBulk(b []byte, d *fault) Reason {
	n := (len(b) - 2) / BulkEntrySize
	if len(b) < BulkSize(1) || (len(b)-2)%BulkEntrySize != 0 || n > MaxBulkEntries {
		return fail(d, fault{reason: ReasonLength, field: -1, detail: detLenBulk, got: uint64(len(b))})
	}
	last := len(b) - 1
	if x := xorBytes(b[:last]); x != b[last] {
		return fail(d, fault{reason: ReasonChecksum, field: -1, detail: detChecksum, want: uint64(x), got: uint64(b[last])})
	}
	for i := 0; i < n; i++ {
		e := b[1+i*BulkEntrySize : 1+(i+1)*BulkEntrySize]
		id := binary.BigEndian.Uint32(e)
		if e[12] != 0 {
			// Field first, then pad: an unknown field is reported as such.
			if fi := lookupField(id); fi >= 0 {
				return fail(d, fault{reason: ReasonValue, field: fi, entry: int8(i + 1), detail: detValuePad, got: uint64(e[12])})
			}
		}
		if r := checkEntry(id, binary.BigEndian.Uint64(e[4:12]), int8(i+1), d); r != ReasonOK {
			return r
		}
	}
	return ReasonOK
}

// Apply returns s with a state-changing frame applied (UPDATE, FEATURE_TOGGLE,
// RESIZE, BULK). Other types leave s as it is. The frame is checked first, so
// either every change of f is applied or none is and the error says why.
func (s State) Apply(f *Frame) (State, error) {
	if err := f.Check(); err != nil {
		return s, err
	}
	switch f.Type {
	case TypeUpdate:
		return s.set(FieldID(f.Field), f.Value), nil
	case TypeFeatureToggle:
		bit, on := ToggleValue(f.Value)
		if on {
			s.FeatureFlags |= 1 << bit
		} else {
			s.FeatureFlags &^= 1 << bit
		}
	case TypeResize:
		s.Rows, s.Cols = ResizeValue(f.Value)
	case TypeBulk:
		for i := 0; i < f.N; i++ {
			s = s.set(f.Entries[i].Field, f.Entries[i].Value)
		}
	}
	return s, nil
}

// Diff returns the BULK frame that turns from into to, or ok=false when they
// are equal. Fields are listed in wire order.
func Diff(from, to State) (f Frame, ok bool) {
	f.Type = TypeBulk
	for _, fd := range fields {
		if v := to.Get(fd.ID); v != from.Get(fd.ID) {
			f.Entries[f.N] = Entry{Field: fd.ID, Value: v}
			f.N++
		}
	}
	return f, f.N > 0
}
