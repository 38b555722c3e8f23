package state

import (
	"bytes"
	"testing"

	"github.com/regedge/regedge/internal/codec"
)

// FuzzDecodeFile: decoding never panics; what it accepts is a valid state,
// and a format 2 file it accepts is exactly the line encodeFile writes
// (one spelling per state, so no changed byte can pass).
func FuzzDecodeFile(f *testing.F) {
	f.Add(encodeFile(codec.DefaultState()))
	f.Add(encodeFile(other))
	f.Add([]byte(codec.DefaultState().Dump() + "\n"))
	f.Add([]byte("regedge-state 3 0x01a1b2c3d40000000702185000 crc32c:00000000\n"))
	f.Add([]byte("regedge-state 2 0x01A1B2C3D40000000702185000 crc32c:16ed925e\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, format, err := decodeFile(b)
		if err != nil {
			return
		}
		if verr := st.Validate(); verr != nil {
			t.Fatalf("accepted %q as %v, which is invalid: %v", b, st, verr)
		}
		switch format {
		case fileFormat:
			if !bytes.Equal(b, encodeFile(st)) {
				t.Fatalf("accepted %q, which is not the canonical %q", b, encodeFile(st))
			}
		case formatLegacy:
			if bytes.HasPrefix(b, []byte(fileMagic)) {
				t.Fatalf("a magic-prefixed %q read as format 1", b)
			}
		default:
			t.Fatalf("format %d", format)
		}
	})
}
