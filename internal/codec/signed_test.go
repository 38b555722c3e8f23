package codec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/vectors"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signedVectorKey(t *testing.T, v vectors.SignedVector) (ed25519.PrivateKey, ed25519.PublicKey) {
	t.Helper()
	blk, _ := pem.Decode([]byte(v.PrivateKeyPEM))
	if blk == nil {
		t.Fatal("private key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	priv := k.(ed25519.PrivateKey)
	blk, _ = pem.Decode([]byte(v.PublicKeyPEM))
	if blk == nil {
		t.Fatal("public key: no PEM block")
	}
	pk, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub := pk.(ed25519.PublicKey)
	if !bytes.Equal(pub, mustHex(t, v.PublicKeyHex)) || !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
		t.Fatalf("the vector's keys disagree: raw %s, PEM %x", v.PublicKeyHex, pub)
	}
	return priv, pub
}

// TestSignedVectors: signing each vector's datagram with its key and
// timestamp gives exactly its bytes; the bytes split, check and verify; and
// flipping any one bit of datagram, timestamp or signature fails.
func TestSignedVectors(t *testing.T) {
	all := loadVectors(t)
	if len(all.SignedDatagrams) < 2 {
		t.Fatalf("%d signed vectors, want the seed's and regedge's", len(all.SignedDatagrams))
	}
	for _, v := range all.SignedDatagrams {
		t.Run(v.Name, func(t *testing.T) {
			if v.Domain != SignatureDomain || !v.Verifies {
				t.Fatalf("vector domain %q verifies=%v", v.Domain, v.Verifies)
			}
			priv, pub := signedVectorKey(t, v)
			dg, want := mustHex(t, v.DatagramHex), mustHex(t, v.Hex)
			if got := AppendSigned(nil, dg, v.TimestampMS, priv); !bytes.Equal(got, want) {
				t.Fatalf("AppendSigned:\n got %x\nwant %x", got, want)
			}
			if r := CheckDatagram(want, &DefaultVersions); r != ReasonOK {
				t.Fatalf("CheckDatagram = %s", r)
			}
			d, tr, ok := SplitSigned(want)
			if !ok || !bytes.Equal(d, dg) || len(tr) != TrailerSize {
				t.Fatalf("SplitSigned = %x, %x, %v", d, tr, ok)
			}
			trailer, err := ParseTrailer(tr)
			if err != nil || trailer.Timestamp != v.TimestampMS {
				t.Fatalf("ParseTrailer = %+v, %v", trailer, err)
			}
			if !trailer.Verify(d, pub) {
				t.Fatal("the vector does not verify")
			}
			for i := range want {
				for bit := 0; bit < 8; bit++ {
					m := append([]byte(nil), want...)
					m[i] ^= 1 << bit
					md, mtr, ok := SplitSigned(m)
					if !ok {
						continue // a flipped type byte can change the length reading: not signed at all
					}
					mt, err := ParseTrailer(mtr)
					if err == nil && mt.Verify(md, pub) {
						t.Fatalf("flipping bit %d of byte %d still verifies", bit, i)
					}
				}
			}
			// The same bytes under another domain do not verify: the domain is signed.
			var buf [len(SignatureDomain) + MaxDatagramSize + 8]byte
			msg := signedMessage(&buf, d, trailer.Timestamp)
			other := append([]byte("regedge-bus-v2"), msg[len(SignatureDomain):]...)
			if ed25519.Verify(pub, other, trailer.Signature[:]) {
				t.Fatal("the signature verifies without its domain")
			}
		})
	}
}

func TestSplitSigned(t *testing.T) {
	def := DefaultState()
	upd := Update(FieldRows, 40)
	fixed := AppendDatagram(nil, def, &upd)
	blk, _ := Bulk(Entry{FieldRows, 40}, Entry{FieldCols, 120})
	bulk := AppendDatagram(nil, def, &blk)
	tr := bytes.Repeat([]byte{0xee}, TrailerSize)
	for _, c := range []struct {
		name    string
		b       []byte
		dgLen   int // 0: does not split
		trailer bool
	}{
		{"fixed", fixed, 27, false},
		{"fixed + trailer", append(append([]byte(nil), fixed...), tr...), 27, true},
		{"fixed + 71", append(append([]byte(nil), fixed...), tr[:71]...), 0, false},
		{"fixed + 73", append(append(append([]byte(nil), fixed...), tr...), 0), 0, false},
		{"bulk", bulk, len(bulk), false},
		{"bulk + trailer", append(append([]byte(nil), bulk...), tr...), len(bulk), true},
		{"bulk + 1", append(append([]byte(nil), bulk...), 0), 0, false},
		{"26 bytes", fixed[:26], 0, false},
		{"empty", nil, 0, false},
	} {
		d, trailer, ok := SplitSigned(c.b)
		if ok != (c.dgLen != 0) || len(d) != c.dgLen || (trailer != nil) != c.trailer {
			t.Errorf("%s: SplitSigned = %d bytes, trailer %d bytes, %v", c.name, len(d), len(trailer), ok)
		}
		if ok && !bytes.Equal(append(append([]byte(nil), d...), trailer...), c.b) {
			t.Errorf("%s: the parts do not make the input", c.name)
		}
		if trailer != nil && cap(d) != len(d) {
			t.Errorf("%s: an append to the datagram part would overwrite the trailer", c.name)
		}
	}
}

func TestParseTrailerSizes(t *testing.T) {
	for _, n := range []int{0, 1, 8, 71, 73, 144} {
		tr, err := ParseTrailer(make([]byte, n))
		if !errors.Is(err, ErrLength) || tr != (Trailer{}) {
			t.Errorf("%d bytes: %+v, %v; want a length error and nothing parsed", n, tr, err)
		}
	}
	b := make([]byte, TrailerSize)
	binary.BigEndian.PutUint64(b, 1767225600000)
	b[8], b[71] = 0xaa, 0xbb
	tr, err := ParseTrailer(b)
	if err != nil || tr.Timestamp != 1767225600000 || tr.Signature[0] != 0xaa || tr.Signature[63] != 0xbb {
		t.Fatalf("ParseTrailer = %+v, %v", tr, err)
	}
	if back := tr.Append(nil); !bytes.Equal(back, b) {
		t.Fatalf("Append = %x, want %x", back, b)
	}
	if !tr.Time().Equal(time.UnixMilli(1767225600000)) {
		t.Fatalf("Time = %v", tr.Time())
	}
}

func TestTrailerWithin(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	ms := func(v uint64) *Trailer { return &Trailer{Timestamp: v} }
	for _, c := range []struct {
		ts   uint64
		want bool
	}{
		{1767225600000, true},
		{1767225600000 - 30000, true},
		{1767225600000 + 30000, true},
		{1767225600000 - 30001, false},
		{1767225600000 + 30001, false},
		{0, false},
		{^uint64(0), false},
		{1 << 63, false},
	} {
		if got := ms(c.ts).Within(now, 30*time.Second); got != c.want {
			t.Errorf("timestamp %d: Within = %v, want %v", c.ts, got, c.want)
		}
	}
	if ms(0).Within(time.UnixMilli(-5), time.Hour) {
		t.Error("a clock before 1970 accepted a timestamp")
	}
}

func TestTrailerVerifyKeys(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	upd := Update(FieldRows, 40)
	dg := AppendDatagram(nil, DefaultState(), &upd)
	tr := Sign(dg, 1767225600000, priv)
	if !tr.Verify(dg, priv.Public().(ed25519.PublicKey)) {
		t.Fatal("own signature does not verify")
	}
	if tr.Verify(dg, other.Public().(ed25519.PublicKey)) {
		t.Fatal("verifies with another key")
	}
	for _, k := range []ed25519.PublicKey{nil, make(ed25519.PublicKey, 31), make(ed25519.PublicKey, 33)} {
		if tr.Verify(dg, k) {
			t.Fatalf("verifies with a %d-byte key", len(k))
		}
	}
	// A longer message than any datagram still signs and verifies (the
	// stack buffer is only an optimisation).
	long := bytes.Repeat([]byte{1}, 1000)
	lt := Sign(long, 5, priv)
	if !lt.Verify(long, priv.Public().(ed25519.PublicKey)) {
		t.Fatal("a long message does not verify")
	}
}

func TestCheckSignedDatagramAllocs(t *testing.T) {
	upd := Update(FieldRows, 40)
	b := append(AppendDatagram(nil, DefaultState(), &upd), make([]byte, TrailerSize)...)
	bad := append(append([]byte(nil), b...), 0)
	if n := testing.AllocsPerRun(100, func() {
		_ = CheckDatagram(b, &DefaultVersions)
		_ = CheckDatagram(bad, &DefaultVersions)
		_, _, _ = SplitSigned(b)
	}); n != 0 {
		t.Fatalf("%v allocations per run, want 0", n)
	}
	if r := CheckDatagram(bad, &DefaultVersions); r != ReasonLength {
		t.Fatalf("73-byte trailer: %s, want length", r)
	}
}

func TestSignedLengthError(t *testing.T) {
	upd := Update(FieldRows, 40)
	b := append(AppendDatagram(nil, DefaultState(), &upd), make([]byte, TrailerSize+1)...)
	_, err := DecodeDatagram(b, &DefaultVersions)
	var ce *Error
	if !errors.As(err, &ce) || ce.Reason != ReasonLength || ce.Detail != "want 14 bytes after the state (the frame), or 86 (the frame and a 72-byte trailer), got 87" {
		t.Fatalf("error %v", err)
	}
}

// FuzzSignedDatagram: for any input, the length rule, the check, the
// decoder and the trailer parser agree; a valid input splits into a
// datagram that re-encodes and a trailer of exactly 72 bytes (or none); and
// a trailer signed again over the split datagram verifies, while the
// input's own trailer (not made with this key) does not.
func FuzzSignedDatagram(f *testing.F) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	for _, v := range loadVectors(f).SignedDatagrams {
		f.Add(mustHex(f, v.Hex))
	}
	for _, v := range loadVectors(f).Datagrams {
		f.Add(v.Bytes())
	}
	versions := NewVersionSet(1, 2)
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		r := CheckDatagram(b, &versions)
		dg, tr, ok := SplitSigned(b)
		if !bytes.Equal(in, b) {
			t.Fatal("input modified")
		}
		if len(b) >= MinDatagramSize && !ok && r != ReasonLength && r != ReasonState && r != ReasonVersion {
			t.Fatalf("does not split but the verdict is %s", r)
		}
		if ok && len(tr) != 0 && len(tr) != TrailerSize {
			t.Fatalf("trailer of %d bytes", len(tr))
		}
		if r != ReasonOK {
			return
		}
		if !ok {
			t.Fatal("valid but does not split")
		}
		d, err := DecodeDatagram(b, &versions)
		if err != nil {
			t.Fatalf("CheckDatagram ok, DecodeDatagram: %v", err)
		}
		if enc := AppendDatagram(nil, d.Sender, &d.Frame); !bytes.Equal(enc, dg) {
			t.Fatalf("datagram part %x re-encodes as %x", dg, enc)
		}
		if tr == nil {
			return
		}
		parsed, err := ParseTrailer(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(parsed.Append(nil), tr) {
			t.Fatal("trailer round trip")
		}
		if want := Sign(dg, parsed.Timestamp, key); parsed.Verify(dg, pub) && !bytes.Equal(want.Append(nil), tr) {
			t.Fatal("a trailer not made with the key verifies")
		}
		resigned := AppendSigned(nil, dg, parsed.Timestamp, key)
		if CheckDatagram(resigned, &versions) != ReasonOK {
			t.Fatal("re-signed datagram is not valid")
		}
		_, rtr, _ := SplitSigned(resigned)
		rt, _ := ParseTrailer(rtr)
		if !rt.Verify(dg, pub) {
			t.Fatal("re-signed datagram does not verify")
		}
	})
}
