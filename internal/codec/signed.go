package codec

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"
)

// Signed datagrams (docs/protocol.md §3.1a; docs/config-plane.md): a bus datagram
// followed by a 72-byte trailer, the sender's clock and an Ed25519 signature
// over SignatureDomain, the datagram and that clock.
const (
	// TrailerSize is the size of the trailer: timestamp (u64 BE, Unix ms)
	// and signature.
	TrailerSize = 8 + ed25519.SignatureSize
	// SignatureDomain prefixes every signed message, so a bus signature can
	// never be taken for a signature over anything else made with the same
	// key (a token, say).
	SignatureDomain = "regedge-bus-v1"
	// MaxSignedDatagramSize is the largest datagram with a trailer.
	MaxSignedDatagramSize = MaxDatagramSize + TrailerSize
)

// frameSizeFits reports whether n bytes is a valid length for a frame whose
// type byte is t (§2.3): 14 for every type but BULK, 2+13N with 1 <= N <= 16
// for BULK.
func frameSizeFits(t byte, n int) bool {
	if FrameType(t) == TypeBulk {
		return n >= BulkSize(1) && n <= MaxFrameSize && (n-2)%BulkEntrySize == 0
	}
	return n == FixedFrameSize
}

// datagramSize returns how many bytes of b are the datagram (state and
// frame) under the length rule of signed datagrams: all of b, or all but a
// trailer of TrailerSize. It returns 0 when b's length is neither. The two
// readings never both fit (72 is not a multiple of 13), so the answer is
// unique. It reads only b's length and its type byte.
func datagramSize(b []byte) int {
	if len(b) < MinDatagramSize {
		return 0
	}
	t, flen := b[StateSize], len(b)-StateSize
	if frameSizeFits(t, flen) {
		return len(b)
	}
	if flen > TrailerSize && frameSizeFits(t, flen-TrailerSize) {
		return len(b) - TrailerSize
	}
	return 0
}

// SplitSigned splits b by the length rule into the datagram (state and
// frame) and the trailer, which is nil when b carries none. ok is false when
// the length fits neither reading; the verdict of b is then `length` (or an
// earlier one: state, version). Nothing but the length and the type byte is
// looked at, and nothing is copied.
func SplitSigned(b []byte) (datagram, trailer []byte, ok bool) {
	n := datagramSize(b)
	if n == 0 {
		return nil, nil, false
	}
	if n == len(b) {
		return b, nil, true
	}
	return b[:n:n], b[n:], true
}

// Trailer is a parsed trailer.
type Trailer struct {
	Timestamp uint64 // the sender's clock, ms since the Unix epoch
	Signature [ed25519.SignatureSize]byte
}

// ParseTrailer parses exactly TrailerSize bytes; any other size is a
// *Error with reason length.
func ParseTrailer(b []byte) (Trailer, error) {
	if len(b) != TrailerSize {
		return Trailer{}, &Error{Reason: ReasonLength, What: "trailer", Detail: fmt.Sprintf("want %d bytes, got %d", TrailerSize, len(b))}
	}
	var t Trailer
	t.Timestamp = binary.BigEndian.Uint64(b)
	copy(t.Signature[:], b[8:])
	return t, nil
}

// Append appends the trailer's wire form to dst.
func (t *Trailer) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, t.Timestamp)
	return append(dst, t.Signature[:]...)
}

// Time returns the trailer's timestamp as a time.
func (t *Trailer) Time() time.Time { return time.UnixMilli(int64(t.Timestamp)) }

// Within reports whether the trailer's timestamp is at most window away
// from now, in either direction. It works on any u64 timestamp without
// overflow.
func (t *Trailer) Within(now time.Time, window time.Duration) bool {
	n := now.UnixMilli()
	if n < 0 {
		return false
	}
	un, w := uint64(n), uint64(window.Milliseconds())
	if t.Timestamp >= un {
		return t.Timestamp-un <= w
	}
	return un-t.Timestamp <= w
}

// signedMessage builds SignatureDomain || datagram || timestamp in buf when
// it fits (every valid datagram does), else in a new slice.
func signedMessage(buf *[len(SignatureDomain) + MaxDatagramSize + 8]byte, datagram []byte, ts uint64) []byte {
	msg := buf[:0]
	if len(SignatureDomain)+len(datagram)+8 > len(buf) {
		msg = nil
	}
	msg = append(msg, SignatureDomain...)
	msg = append(msg, datagram...)
	return binary.BigEndian.AppendUint64(msg, ts)
}

// Sign returns the trailer that signs datagram at timestamp ts (Unix ms)
// with key.
func Sign(datagram []byte, ts uint64, key ed25519.PrivateKey) Trailer {
	var buf [len(SignatureDomain) + MaxDatagramSize + 8]byte
	t := Trailer{Timestamp: ts}
	copy(t.Signature[:], ed25519.Sign(key, signedMessage(&buf, datagram, ts)))
	return t
}

// AppendSigned appends datagram and its trailer (timestamp ts, Unix ms,
// signed with key) to dst.
func AppendSigned(dst, datagram []byte, ts uint64, key ed25519.PrivateKey) []byte {
	t := Sign(datagram, ts, key)
	return t.Append(append(dst, datagram...))
}

// Verify reports whether the trailer's signature over datagram and the
// trailer's timestamp verifies with key. A key of the wrong size never
// verifies.
func (t *Trailer) Verify(datagram []byte, key ed25519.PublicKey) bool {
	if len(key) != ed25519.PublicKeySize {
		return false
	}
	var buf [len(SignatureDomain) + MaxDatagramSize + 8]byte
	return ed25519.Verify(key, signedMessage(&buf, datagram, t.Timestamp), t.Signature[:])
}
