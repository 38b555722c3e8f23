package codec

import (
	"bytes"
	"net/http"
	"testing"
)

// Crashers found by these targets are kept by `go test` under
// testdata/fuzz/<Target>/ and run as ordinary cases from then on.

func addVectorSeeds(f *testing.F, pick func(t testing.TB) [][]byte) {
	for _, b := range pick(f) {
		f.Add(b)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	addVectorSeeds(f, func(t testing.TB) (out [][]byte) {
		for _, v := range loadVectors(t).Frames {
			out = append(out, v.Bytes())
		}
		return out
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		r := CheckFrame(b)
		fr, err := DecodeFrame(b)
		if !bytes.Equal(in, b) {
			t.Fatal("decoder modified its input")
		}
		got, ok := ReasonOf(err)
		if !ok || got != r {
			t.Fatalf("CheckFrame = %v but DecodeFrame error = %v", r, err)
		}
		if err != nil {
			if fr != (Frame{}) {
				t.Fatalf("half-parsed frame with error: %+v", fr)
			}
			return
		}
		if enc := fr.Bytes(); !bytes.Equal(enc, b) {
			t.Fatalf("decode then encode: %x, want %x", enc, b)
		}
		s, err := DefaultState().Apply(&fr)
		if err != nil {
			t.Fatalf("Apply of a valid frame: %v", err)
		}
		if !s.Valid() {
			t.Fatalf("Apply of a valid frame gave an invalid state %v", s)
		}
	})
}

func FuzzDecodeDatagram(f *testing.F) {
	addVectorSeeds(f, func(t testing.TB) (out [][]byte) {
		for _, v := range loadVectors(t).Datagrams {
			out = append(out, v.Bytes())
		}
		return out
	})
	versions := NewVersionSet(1, 2)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := CheckDatagram(b, &versions)
		d, err := DecodeDatagram(b, &versions)
		got, ok := ReasonOf(err)
		if !ok || got != r {
			t.Fatalf("CheckDatagram = %v but DecodeDatagram error = %v", r, err)
		}
		if err != nil {
			if d != (Datagram{}) {
				t.Fatalf("half-parsed datagram with error: %+v", d)
			}
			return
		}
		if !d.Sender.Valid() || !versions.Has(d.Sender.Version) {
			t.Fatalf("accepted sender state %v", d.Sender)
		}
		dg, _, ok := SplitSigned(b)
		if !ok {
			t.Fatalf("valid datagram %x does not split", b)
		}
		if enc := AppendDatagram(nil, d.Sender, &d.Frame); !bytes.Equal(enc, dg) {
			t.Fatalf("decode then encode: %x, want %x", enc, dg)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	addVectorSeeds(f, func(t testing.TB) (out [][]byte) {
		for _, v := range loadVectors(t).States {
			out = append(out, v.Bytes())
		}
		return out
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			if s != (State{}) {
				t.Fatalf("half-parsed state with error: %v", s)
			}
			return
		}
		if enc := s.Bytes(); !bytes.Equal(enc[:], b) {
			t.Fatalf("decode then encode: %x, want %x", enc, b)
		}
		back, err := ParseDump(s.Dump())
		if err != nil || back != s {
			t.Fatalf("dump round trip: %v, %v", back, err)
		}
	})
}

func FuzzParseDump(f *testing.F) {
	for _, v := range loadVectors(f).States {
		f.Add(v.Dump)
	}
	f.Add("0X01A1B2C3D40000000702185000")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseDump(in)
		if err != nil {
			if s != (State{}) {
				t.Fatalf("half-parsed state with error: %v", s)
			}
			return
		}
		if !s.Valid() {
			t.Fatalf("ParseDump accepted invalid %v", s)
		}
		if got := s.Dump(); !bytesEqualFold(got, in) {
			t.Fatalf("dump round trip: %s, want %s", got, in)
		}
	})
}

func bytesEqualFold(a, b string) bool { return bytes.EqualFold([]byte(a), []byte(b)) }

func FuzzExtractHeaders(f *testing.F) {
	f.Add("0x01a1b2c3d40000000702185000", "1", "0xa1b2c3d4", "0x00000007", "2", "24", "80")
	f.Add("", "", "", "", "", "40", "")
	f.Add("", "2", "0XFFFFFFFF", "0x000007ff", "3", "255", "1")
	f.Add("0x01a1b2c3d40000000702185000", "", "", "", "", "41", "")
	def := DefaultState()
	f.Fuzz(func(t *testing.T, dump, ver, hash, flags, mode, rows, cols string) {
		h := http.Header{}
		for name, v := range map[string]string{
			HeaderConfigDump: dump, HeaderConfigVersion: ver, HeaderRegistryHash: hash,
			HeaderFeatureFlags: flags, HeaderTerminalMode: mode, HeaderTerminalRows: rows,
			HeaderTerminalCols: cols,
		} {
			if v != "" {
				h.Set(name, v)
			}
		}
		s, err := extractHeaders(h, def)
		if err != nil {
			if s != def {
				t.Fatalf("state changed on error: %v", s)
			}
			return
		}
		if !s.Valid() {
			t.Fatalf("extracted invalid state %v", s)
		}
		if dump != "" {
			want, err := ParseDump(dump)
			if err != nil || want != s {
				t.Fatalf("dump %q gave %v, ParseDump gives %v, %v", dump, s, want, err)
			}
		}
		// What we extract, we can inject and extract again.
		h2 := http.Header{}
		injectHeaders(NewHeaderBlock(s), h2)
		back, err := extractHeaders(h2, State{})
		if err != nil || back != s {
			t.Fatalf("inject/extract round trip: %v, %v", back, err)
		}
	})
}

func FuzzParseHex(f *testing.F) {
	f.Add("0x0102")
	f.Add("20 · 00 ff")
	f.Fuzz(func(t *testing.T, in string) {
		b, err := ParseHex(in)
		if err != nil {
			if b != nil {
				t.Fatal("bytes returned with error")
			}
			return
		}
		if len(b) > len(in) {
			t.Fatalf("%d bytes from %d characters", len(b), len(in))
		}
	})
}
