package codec

import (
	"bytes"
	"errors"
	"testing"

	"github.com/regedge/regedge/internal/vectors"
)

func loadVectors(t testing.TB) *vectors.File {
	t.Helper()
	v, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVectorsFrames(t *testing.T) {
	for _, v := range loadVectors(t).Frames {
		t.Run(v.Name, func(t *testing.T) {
			b := v.Bytes()
			if got := CheckFrame(b).String(); got != v.Verdict {
				t.Fatalf("CheckFrame(%s) = %s, want %s", v.Hex, got, v.Verdict)
			}
			f, err := DecodeFrame(b)
			r, ok := ReasonOf(err)
			if !ok || r.String() != v.Verdict {
				t.Fatalf("DecodeFrame(%s) error %v, want verdict %s", v.Hex, err, v.Verdict)
			}
			if err != nil {
				if f != (Frame{}) {
					t.Fatalf("DecodeFrame returned a half-parsed frame with its error: %+v", f)
				}
				return
			}
			if enc := f.Bytes(); !bytes.Equal(enc, b) {
				t.Fatalf("round trip: encoded %x, want %x", enc, b)
			}
			if err := f.Check(); err != nil {
				t.Fatalf("Check of a decoded valid frame: %v", err)
			}
		})
	}
}

func TestVectorsStates(t *testing.T) {
	for _, v := range loadVectors(t).States {
		t.Run(v.Name, func(t *testing.T) {
			b := v.Bytes()
			s, err := DecodeState(b)
			r, ok := ReasonOf(err)
			if !ok || r.String() != v.Verdict {
				t.Fatalf("DecodeState(%s) error %v, want verdict %s", v.Hex, err, v.Verdict)
			}
			ds, derr := ParseDump(v.Dump)
			if (err == nil) != (derr == nil) || ds != s {
				t.Fatalf("ParseDump(%s) = %v, %v; DecodeState gave %v, %v", v.Dump, ds, derr, s, err)
			}
			if err != nil {
				if !errors.Is(err, ErrState) || s != (State{}) {
					t.Fatalf("invalid state: got %v, %v", s, err)
				}
				return
			}
			if got := s.Bytes(); !bytes.Equal(got[:], b) {
				t.Fatalf("round trip: %x, want %x", got, b)
			}
			if s.Dump() != v.Dump {
				t.Fatalf("Dump() = %s, want %s", s.Dump(), v.Dump)
			}
		})
	}
}

func TestVectorsDatagrams(t *testing.T) {
	for _, v := range loadVectors(t).Datagrams {
		t.Run(v.Name, func(t *testing.T) {
			b := v.Bytes()
			if got := CheckDatagram(b, &DefaultVersions).String(); got != v.Verdict {
				t.Fatalf("CheckDatagram(%s) = %s, want %s", v.Hex, got, v.Verdict)
			}
			d, err := DecodeDatagram(b, &DefaultVersions)
			r, ok := ReasonOf(err)
			if !ok || r.String() != v.Verdict {
				t.Fatalf("DecodeDatagram error %v, want verdict %s", err, v.Verdict)
			}
			if err != nil {
				if d != (Datagram{}) {
					t.Fatalf("half-parsed datagram returned with error: %+v", d)
				}
				return
			}
			// A trailer is not part of the decoded datagram.
			dg, _, _ := SplitSigned(b)
			if enc := AppendDatagram(nil, d.Sender, &d.Frame); !bytes.Equal(enc, dg) {
				t.Fatalf("round trip: %x, want %x", enc, dg)
			}
		})
	}
}

func TestVectorsDefaultState(t *testing.T) {
	v := loadVectors(t)
	if got := DefaultState().Dump(); got != v.DefaultDump {
		t.Fatalf("DefaultState().Dump() = %s, want %s", got, v.DefaultDump)
	}
}
