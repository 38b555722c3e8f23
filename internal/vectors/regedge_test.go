package vectors

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// vectors-regedge.json is written from the table below by
//
//	go test ./internal/vectors -run TestRegedgeVectors -update
//
// The bytes are built here by hand, independently of internal/codec, and the
// verdicts are written by hand from docs/protocol.md; the test fails when the file
// and the table drift apart.
var update = flag.Bool("update", false, "rewrite testdata/vectors-regedge.json")

func sum(b []byte) byte {
	var x byte
	for _, c := range b {
		x ^= c
	}
	return x
}

// fixed builds a 14-byte frame with a correct checksum.
func fixed(typ byte, id uint32, v uint64) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint64(b, v)
	return append(b, sum(b))
}

type ent struct {
	id  uint32
	v   uint64
	pad byte
}

// bulk builds a BULK frame with a correct checksum.
func bulk(es ...ent) []byte {
	b := []byte{0x20}
	for _, e := range es {
		b = binary.BigEndian.AppendUint32(b, e.id)
		b = binary.BigEndian.AppendUint64(b, e.v)
		b = append(b, e.pad)
	}
	return append(b, sum(b))
}

// badsum flips the checksum byte.
func badsum(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)-1] ^= 0xff
	return c
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func state(version byte, hash, flags uint32, mode, rows, cols, reserved byte) []byte {
	b := []byte{version}
	b = binary.BigEndian.AppendUint32(b, hash)
	b = binary.BigEndian.AppendUint32(b, flags)
	return append(b, mode, rows, cols, reserved)
}

var def = state(1, 0xa1b2c3d4, 7, 2, 24, 80, 0)

func repeat(e ent, n int) []ent {
	out := make([]ent, n)
	for i := range out {
		out[i] = e
	}
	return out
}

type vec struct {
	name    string
	b       []byte
	verdict string
}

func regedgeFrames() []vec {
	upd := func(id uint32, v uint64) []byte { return fixed(0x01, id, v) }
	bulk16bad := append(repeat(ent{10, 24, 0}, 15), ent{11, 0, 0})
	return []vec{
		// UPDATE: every field at both edges of its rule.
		{"update version=255", upd(0, 255), "ok"},
		{"update version=256 too wide", upd(0, 256), "value"},
		{"update registryHash=0", upd(1, 0), "ok"},
		{"update registryHash=0xffffffff", upd(1, 0xffffffff), "ok"},
		{"update registryHash=2^32", upd(1, 1<<32), "value"},
		{"update featureFlags=0", upd(5, 0), "ok"},
		{"update featureFlags=0x7ff", upd(5, 0x7ff), "ok"},
		{"update featureFlags=0x800", upd(5, 0x800), "value"},
		{"update featureFlags bit 31", upd(5, 0x80000000), "value"},
		{"update terminalMode=0", upd(9, 0), "ok"},
		{"update terminalMode=3", upd(9, 3), "ok"},
		{"update terminalMode=255", upd(9, 255), "value"},
		{"update rows=1", upd(10, 1), "ok"},
		{"update rows=255", upd(10, 255), "ok"},
		{"update rows=256", upd(10, 256), "value"},
		{"update cols=0", upd(11, 0), "value"},
		{"update cols=1", upd(11, 1), "ok"},
		{"update cols=255", upd(11, 255), "ok"},
		{"update reserved=0", upd(12, 0), "ok"},
		{"update value top bit", upd(10, 1<<63|24), "value"},
		{"update field 3 (inside registryHash)", upd(3, 0), "field"},
		{"update field 4", upd(4, 0), "field"},
		{"update field 6", upd(6, 0), "field"},
		{"update field 8", upd(8, 0), "field"},
		{"update field 13", upd(13, 0), "field"},
		{"update field 0xffffffff", upd(0xffffffff, 0), "field"},
		{"update field 0x01000000", upd(0x01000000, 1), "field"},
		// FEATURE_TOGGLE.
		{"toggle bit0 off", fixed(0x02, 5, 0), "ok"},
		{"toggle bit0 on", fixed(0x02, 5, 1), "ok"},
		{"toggle bit10 on", fixed(0x02, 5, 21), "ok"},
		{"toggle bit11 off", fixed(0x02, 5, 22), "value"},
		{"toggle huge value", fixed(0x02, 5, 1<<40), "value"},
		{"toggle field 0", fixed(0x02, 0, 5), "field"},
		{"toggle field 1", fixed(0x02, 1, 5), "field"},
		// RESIZE.
		{"resize 1x1", fixed(0x04, 0, 1<<16|1), "ok"},
		{"resize 255x255", fixed(0x04, 0, 255<<16|255), "ok"},
		{"resize cols 0", fixed(0x04, 0, 40<<16), "value"},
		{"resize stray bit 8", fixed(0x04, 0, 40<<16|1<<8|120), "value"},
		{"resize stray bit 24", fixed(0x04, 0, 1<<24|40<<16|120), "value"},
		{"resize field 10", fixed(0x04, 10, 40<<16|120), "field"},
		// HEARTBEAT.
		{"heartbeat t=0", fixed(0x05, 0, 0), "ok"},
		{"heartbeat t=max", fixed(0x05, 0, ^uint64(0)), "ok"},
		{"heartbeat field 1", fixed(0x05, 1, 1700000000000), "field"},
		// ACK.
		{"ack of toggle", fixed(0x06, 2, 0), "ok"},
		{"ack of resize", fixed(0x06, 4, 0), "ok"},
		{"ack of bulk", fixed(0x06, 0x20, 0), "ok"},
		{"ack of heartbeat", fixed(0x06, 5, 0), "field"},
		{"ack of type 0", fixed(0x06, 0, 0), "field"},
		{"ack of 0x101", fixed(0x06, 0x101, 0), "field"},
		{"ack value nonzero", fixed(0x06, 1, 1), "value"},
		// ERROR.
		{"error 1 empty message", fixed(0x07, 1, 0), "ok"},
		{"error 2 'checksum'", fixed(0x07, 2, binary.BigEndian.Uint64([]byte("checksum"))), "ok"},
		{"error 5 'denied'", fixed(0x07, 5, binary.BigEndian.Uint64([]byte("denied\x00\x00"))), "ok"},
		{"error code 0", fixed(0x07, 0, 0), "field"},
		{"error 6 'storage'", fixed(0x07, 6, binary.BigEndian.Uint64([]byte("storage\x00"))), "ok"},
		{"error code 7", fixed(0x07, 7, 0), "field"},
		{"error message with gap", fixed(0x07, 4, binary.BigEndian.Uint64([]byte("a\x00b\x00\x00\x00\x00\x00"))), "value"},
		{"error message control byte", fixed(0x07, 4, binary.BigEndian.Uint64([]byte("bad\n\x00\x00\x00\x00"))), "value"},
		{"error message high byte", fixed(0x07, 4, binary.BigEndian.Uint64([]byte("\xffbad\x00\x00\x00\x00"))), "value"},
		// Type byte.
		{"type 0x00", fixed(0x00, 0, 0), "type"},
		{"type 0x08", fixed(0x08, 0, 0), "type"},
		{"type 0x1f", fixed(0x1f, 0, 0), "type"},
		{"type 0x21", fixed(0x21, 0, 0), "type"},
		{"type 0xff", fixed(0xff, 0, 0), "type"},
		// Order of checks: the first failing check gives the reason.
		{"unknown type, 13 bytes: length first", fixed(0x03, 0, 0)[:13], "length"},
		{"one byte 0x01", []byte{0x01}, "length"},
		{"one byte 0x20", []byte{0x20}, "length"},
		{"unknown type and bad checksum: type first", badsum(fixed(0x03, 0, 0)), "type"},
		{"bad checksum and bad field: checksum first", badsum(upd(2, 1)), "checksum"},
		{"bad field and bad value: field first", upd(7, 1<<40), "field"},
		// BULK.
		{"bulk one entry", bulk(ent{9, 3, 0}), "ok"},
		{"bulk reserved=0", bulk(ent{12, 0, 0}), "ok"},
		{"bulk all seven fields", bulk(ent{0, 1, 0}, ent{1, 0, 0}, ent{5, 0x7ff, 0}, ent{9, 0, 0}, ent{10, 255, 0}, ent{11, 1, 0}, ent{12, 0, 0}), "ok"},
		{"bulk 16 bytes", append(bulk(ent{9, 3, 0}), 0), "length"},
		{"bulk 14 bytes (fixed size)", fixed(0x20, 9, 2), "length"},
		{"bulk bad checksum", badsum(bulk(ent{9, 3, 0})), "checksum"},
		{"bulk bad checksum and bad field", badsum(bulk(ent{2, 3, 0})), "checksum"},
		{"bulk entry1 field, entry2 value", bulk(ent{2, 0, 0}, ent{10, 0, 0}), "field"},
		{"bulk entry1 value, entry2 field", bulk(ent{10, 0, 0}, ent{2, 0, 0}), "value"},
		{"bulk pad and value both bad", bulk(ent{10, 0, 1}), "value"},
		{"bulk bad field with nonzero pad", bulk(ent{3, 0, 1}), "field"},
		{"bulk 16 entries, last bad", bulk(bulk16bad...), "value"},
		{"bulk toggle-style entry is an update", bulk(ent{5, 0x800, 0}), "value"},
	}
}

func regedgeStates() []vec {
	return []vec{
		{"version 255", state(255, 0xa1b2c3d4, 7, 2, 24, 80, 0), "ok"},
		{"hash ffffffff", state(1, 0xffffffff, 7, 2, 24, 80, 0), "ok"},
		{"flags 0x7ff", state(1, 0xa1b2c3d4, 0x7ff, 2, 24, 80, 0), "ok"},
		{"flags bit 31", state(1, 0xa1b2c3d4, 0x80000000, 2, 24, 80, 0), "state"},
		{"mode 0", state(1, 0xa1b2c3d4, 7, 0, 24, 80, 0), "ok"},
		{"mode 3", state(1, 0xa1b2c3d4, 7, 3, 24, 80, 0), "ok"},
		{"mode 255", state(1, 0xa1b2c3d4, 7, 255, 24, 80, 0), "state"},
		{"rows 1 cols 1", state(1, 0xa1b2c3d4, 7, 2, 1, 1, 0), "ok"},
		{"rows 255 cols 255", state(1, 0xa1b2c3d4, 7, 2, 255, 255, 0), "ok"},
		{"reserved 0x80", state(1, 0xa1b2c3d4, 7, 2, 24, 80, 0x80), "state"},
		{"all zero", state(0, 0, 0, 0, 0, 0, 0), "state"},
	}
}

func regedgeDatagrams() []vec {
	upd := fixed(0x01, 9, 2)
	return []vec{
		{"26 bytes", cat(def, upd[:13]), "length"},
		{"default + toggle", cat(def, fixed(0x02, 5, 5)), "ok"},
		{"default + heartbeat", cat(def, fixed(0x05, 0, 1700000000000)), "ok"},
		{"default + ack", cat(def, fixed(0x06, 1, 0)), "ok"},
		{"default + resize 40x120", cat(def, fixed(0x04, 0, 40<<16|120)), "ok"},
		{"default + bulk 16", cat(def, bulk(repeat(ent{10, 24, 0}, 16)...)), "ok"},
		{"default + bulk 17", cat(def, bulk(repeat(ent{10, 24, 0}, 17)...)), "length"},
		{"default + bulk + trailing byte", cat(def, bulk(ent{9, 2, 0}), []byte{0}), "length"},
		{"default + unknown type", cat(def, fixed(0x03, 0, 0)), "type"},
		{"default + bad field", cat(def, fixed(0x01, 2, 1)), "field"},
		{"default + bad value", cat(def, fixed(0x01, 10, 0)), "value"},
		{"default + bulk bad pad", cat(def, bulk(ent{9, 2, 7})), "value"},
		{"hash 0 sender", cat(state(1, 0, 7, 2, 24, 80, 0), upd), "ok"},
		{"version 0 sender: state before version", cat(state(0, 0xa1b2c3d4, 7, 2, 24, 80, 0), upd), "state"},
		{"version 255 sender", cat(state(255, 0xa1b2c3d4, 7, 2, 24, 80, 0), upd), "version"},
		{"bad state and bad frame: state first", cat(state(1, 0xa1b2c3d4, 7, 2, 24, 80, 1), badsum(upd)), "state"},
		{"bad version and bad frame: version first", cat(state(2, 0xa1b2c3d4, 7, 2, 24, 80, 0), badsum(upd)), "version"},
		{"sender reserved 1", cat(state(1, 0xa1b2c3d4, 7, 2, 24, 80, 1), upd), "state"},
		{"sender flags bit 11", cat(state(1, 0xa1b2c3d4, 0x800, 2, 24, 80, 0), upd), "state"},
		{"two frames", cat(def, upd, upd), "length"},
		// Signed datagrams: the frame's length, or it plus a 72-byte trailer
		// whose content the length rule does not look at.
		{"fixed + trailer", cat(def, upd, trailer(72)), "ok"},
		{"fixed + 71-byte trailer", cat(def, upd, trailer(71)), "length"},
		{"fixed + 73-byte trailer", cat(def, upd, trailer(73)), "length"},
		{"fixed + two trailers", cat(def, upd, trailer(144)), "length"},
		{"bulk 1 + trailer", cat(def, bulk(ent{9, 2, 0}), trailer(72)), "ok"},
		{"bulk 16 + trailer", cat(def, bulk(repeat(ent{10, 24, 0}, 16)...), trailer(72)), "ok"},
		{"bulk 1 + 71-byte trailer", cat(def, bulk(ent{9, 2, 0}), trailer(71)), "length"},
		{"bulk 2 + 73-byte trailer", cat(def, bulk(ent{9, 2, 0}, ent{10, 40, 0}), trailer(73)), "length"},
		{"bulk 17 + trailer", cat(def, bulk(repeat(ent{10, 24, 0}, 17)...), trailer(72)), "length"},
		{"bulk type, 14 bytes + trailer", cat(def, fixed(0x20, 9, 2), trailer(72)), "length"},
		{"trailer: frame checked, bad checksum", cat(def, badsum(upd), trailer(72)), "checksum"},
		{"trailer: unknown type", cat(def, fixed(0x03, 0, 0), trailer(72)), "type"},
		{"trailer: bad value", cat(def, fixed(0x01, 10, 0), trailer(72)), "value"},
		{"trailer: state first", cat(state(1, 0xa1b2c3d4, 7, 2, 24, 80, 1), upd, trailer(72)), "state"},
		{"trailer: version", cat(state(2, 0xa1b2c3d4, 7, 2, 24, 80, 0), upd, trailer(72)), "version"},
		{"a frame where the trailer starts: not judged", cat(def, upd, upd, trailer(58)), "ok"},
	}
}

// trailer returns n bytes standing in for a signature trailer: the length
// rule never reads them, so they need not verify.
func trailer(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(0xa5 ^ i)
	}
	return b
}

// regedgeSigned signs a BULK datagram with a second key, built here with
// crypto/ed25519 directly (not through the codec), so the codec's test
// checks its message layout against an independent one.
func regedgeSigned(t *testing.T) []SignedVector {
	seed := bytes.Repeat([]byte{0x02}, ed25519.SeedSize)
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	const ts = 1767225660000 // 2026-01-01T00:01:00Z
	dg := cat(def, bulk(ent{9, 2, 0}, ent{10, 40, 0}, ent{11, 120, 0}))
	stamp := binary.BigEndian.AppendUint64(nil, ts)
	sig := ed25519.Sign(key, cat([]byte("regedge-bus-v1"), dg, stamp))
	return []SignedVector{{
		Name:          "BULK terminalMode=2 rows=40 cols=120 from the default state, signed with seed 0x02",
		PrivateKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})),
		PublicKeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk})),
		PublicKeyHex:  hex.EncodeToString(pub),
		TimestampMS:   ts,
		DatagramHex:   hex.EncodeToString(dg),
		Hex:           hex.EncodeToString(cat(dg, stamp, sig)),
		Domain:        "regedge-bus-v1",
		Verifies:      true,
	}}
}

func toVectors(vs []vec, withDump bool) []Vector {
	out := make([]Vector, len(vs))
	for i, v := range vs {
		out[i] = Vector{Name: v.name, Hex: hex.EncodeToString(v.b), Verdict: v.verdict}
		if withDump {
			out[i].Dump = "0x" + out[i].Hex
		}
	}
	return out
}

func TestRegedgeVectors(t *testing.T) {
	f := File{
		Protocol:        "regedge wire v1",
		ByteOrder:       "big-endian",
		DefaultStateHex: hex.EncodeToString(def),
		DefaultDump:     "0x" + hex.EncodeToString(def),
		Frames:          toVectors(regedgeFrames(), false),
		States:          toVectors(regedgeStates(), true),
		Datagrams:       toVectors(regedgeDatagrams(), false),
		SignedDatagrams: regedgeSigned(t),
	}
	want, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	path := filepath.Join(Dir(), "vectors-regedge.json")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s drifted from the table in regedge_test.go; run: go test ./internal/vectors -run TestRegedgeVectors -update", path)
	}
}

func TestLoadMergesFiles(t *testing.T) {
	all, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := ReadFile(filepath.Join(Dir(), "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Frames) <= len(seed.Frames) || len(all.States) <= len(seed.States) || len(all.Datagrams) <= len(seed.Datagrams) {
		t.Fatalf("Load returned %d/%d/%d vectors, want more than the seed's %d/%d/%d",
			len(all.Frames), len(all.States), len(all.Datagrams), len(seed.Frames), len(seed.States), len(seed.Datagrams))
	}
	for _, list := range [][]Vector{all.Frames, all.States, all.Datagrams} {
		for _, v := range list {
			if v.Verdict == "" {
				t.Errorf("vector %q has no verdict", v.Name)
			}
		}
	}
}
