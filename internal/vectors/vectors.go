// Package vectors loads the protocol vectors in testdata/: the seed set
// the protocol was published with (vectors.json) and regedge's own
// boundary set (vectors-regedge.json). The Go codec tests, the BPF_PROG_RUN
// tests and the CLI tests all read them through this package.
package vectors

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// Vector is one input and the verdict every receiver must reach for it.
type Vector struct {
	Name    string `json:"name"`
	Hex     string `json:"hex"`
	Dump    string `json:"dump,omitempty"`
	Verdict string `json:"verdict"`
}

// Bytes decodes the vector's hex.
func (v Vector) Bytes() []byte {
	b, err := hex.DecodeString(v.Hex)
	if err != nil {
		panic(fmt.Sprintf("vector %q: bad hex: %v", v.Name, err))
	}
	return b
}

// File is the layout of a vectors file.
type File struct {
	Protocol        string   `json:"protocol"`
	ByteOrder       string   `json:"byte_order"`
	DefaultStateHex string   `json:"default_state_hex"`
	DefaultDump     string   `json:"default_dump"`
	Frames          []Vector `json:"frames"`
	States          []Vector `json:"states"`
	Datagrams       []Vector `json:"datagrams"`
	// SignedDatagrams are complete signed datagrams with their key and
	// timestamp: signing the datagram must give exactly Hex.
	SignedDatagrams []SignedVector `json:"signed_datagrams,omitempty"`
}

// SignedVector is one signed datagram (a datagram and its 72-byte trailer)
// with everything needed to produce it again.
type SignedVector struct {
	Name          string `json:"name"`
	PrivateKeyPEM string `json:"private_key_pkcs8_pem"`
	PublicKeyPEM  string `json:"public_key_pem"`
	PublicKeyHex  string `json:"public_key_raw_hex"`
	TimestampMS   uint64 `json:"timestamp_ms"`
	DatagramHex   string `json:"datagram_hex"`
	Hex           string `json:"hex"`
	Domain        string `json:"domain"`
	Verifies      bool   `json:"verifies"`
}

// Files are the vector files, seed set first.
var Files = []string{"vectors.json", "vectors-regedge.json"}

// Dir returns the absolute path of the repository's testdata directory.
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "testdata"
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata")
}

// ReadFile reads one vectors file by path.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("vectors: %s: %w", path, err)
	}
	for _, list := range [][]Vector{f.Frames, f.States, f.Datagrams} {
		for _, v := range list {
			if _, err := hex.DecodeString(v.Hex); err != nil {
				return nil, fmt.Errorf("vectors: %s: %q: bad hex: %w", path, v.Name, err)
			}
		}
	}
	for _, v := range f.SignedDatagrams {
		for _, h := range []string{v.Hex, v.DatagramHex, v.PublicKeyHex} {
			if _, err := hex.DecodeString(h); err != nil {
				return nil, fmt.Errorf("vectors: %s: %q: bad hex: %w", path, v.Name, err)
			}
		}
	}
	return &f, nil
}

// Load reads every vectors file in testdata/ and returns them merged.
func Load() (*File, error) {
	var all File
	for i, name := range Files {
		f, err := ReadFile(filepath.Join(Dir(), name))
		if err != nil {
			return nil, err
		}
		if i == 0 {
			all.Protocol, all.ByteOrder = f.Protocol, f.ByteOrder
			all.DefaultStateHex, all.DefaultDump = f.DefaultStateHex, f.DefaultDump
		}
		all.Frames = append(all.Frames, f.Frames...)
		all.States = append(all.States, f.States...)
		all.Datagrams = append(all.Datagrams, f.Datagrams...)
		all.SignedDatagrams = append(all.SignedDatagrams, f.SignedDatagrams...)
	}
	return &all, nil
}
