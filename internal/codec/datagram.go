package codec

import (
	"strconv"
	"strings"
)

// MinDatagramSize is the smallest datagram that can be valid: a state and a fixed frame.
const MinDatagramSize = StateSize + FixedFrameSize

// MaxDatagramSize is the largest valid datagram: a state and a BULK of 16 entries.
const MaxDatagramSize = StateSize + MaxFrameSize

// VersionSet is the set of config versions an agent accepts (§1), as a bitmap.
type VersionSet [4]uint64

// DefaultVersions is the default set, {1}.
var DefaultVersions = NewVersionSet(1)

// NewVersionSet returns the set of the given versions.
func NewVersionSet(versions ...uint8) VersionSet {
	var vs VersionSet
	for _, v := range versions {
		vs.Add(v)
	}
	return vs
}

// Add puts v in the set.
func (vs *VersionSet) Add(v uint8) { vs[v>>6] |= 1 << (v & 63) }

// Has reports whether v is in the set.
func (vs *VersionSet) Has(v uint8) bool { return vs[v>>6]&(1<<(v&63)) != 0 }

// List returns the versions in the set in ascending order.
func (vs *VersionSet) List() []uint8 {
	var out []uint8
	for v := 0; v < 256; v++ {
		if vs.Has(uint8(v)) {
			out = append(out, uint8(v))
		}
	}
	return out
}

// String lists the versions, e.g. "{1,2}".
func (vs VersionSet) String() string {
	var parts []string
	for _, v := range vs.List() {
		parts = append(parts, strconv.Itoa(int(v)))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// Datagram is one config bus datagram (§3.1): the sender's state and one frame.
type Datagram struct {
	Sender State
	Frame  Frame
}

// AppendDatagram appends the wire form of a datagram to dst.
func AppendDatagram(dst []byte, sender State, f *Frame) []byte {
	return f.Append(sender.Append(dst))
}

// CheckDatagram returns the §2.3 verdict for one datagram: length, state,
// version, then the frame. versions is the receiver's accepted set. The
// datagram may carry a signature trailer (TrailerSize bytes after the frame):
// its length is accepted, its content is not looked at (SplitSigned,
// ParseTrailer and Trailer.Verify are for that). It never allocates.
func CheckDatagram(b []byte, versions *VersionSet) Reason {
	return checkDatagram(b, versions, nil)
}

func checkDatagram(b []byte, versions *VersionSet, d *fault) Reason {
	if len(b) < MinDatagramSize {
		return fail(d, fault{reason: ReasonLength, field: -1, detail: detLenDatagram, got: uint64(len(b))})
	}
	st := (*[StateSize]byte)(b)
	if r := checkStateBytes(st, d); r != ReasonOK {
		return r
	}
	if !versions.Has(st[0]) {
		return fail(d, fault{reason: ReasonVersion, field: 0, detail: detVersion, got: uint64(st[0])})
	}
	n := datagramSize(b)
	if n == 0 {
		detail := detLenDatagramFrame
		if FrameType(b[StateSize]) == TypeBulk {
			detail = detLenDatagramBulk
		}
		return fail(d, fault{reason: ReasonLength, field: -1, detail: detail, got: uint64(len(b) - StateSize)})
	}
	return checkFrame(b[StateSize:n], d)
}

// DecodeDatagram decodes a datagram that passes every check of §2.3. A
// trailer, when present, is neither decoded nor verified (see SplitSigned).
func DecodeDatagram(b []byte, versions *VersionSet) (Datagram, error) {
	var d Datagram
	if err := DecodeDatagramInto(&d, b, versions); err != nil {
		return Datagram{}, err
	}
	return d, nil
}

// DecodeDatagramInto is DecodeDatagram into a caller's Datagram; on failure *d
// is left as it was.
func DecodeDatagramInto(d *Datagram, b []byte, versions *VersionSet) error {
	var f fault
	if checkDatagram(b, versions, &f) != ReasonOK {
		what := "datagram"
		if len(b) >= MinDatagramSize && f.reason != ReasonState && f.reason != ReasonVersion {
			what += ": " + frameWhat(b[StateSize:])
		}
		return f.err(what)
	}
	decodeChecked(&d.Frame, b[StateSize:datagramSize(b)])
	d.Sender = stateOf((*[StateSize]byte)(b))
	return nil
}
