package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/token"
	"github.com/regedge/regedge/internal/vectors"
)

// seedSignedVector returns the §3.1a vector and its key files.
func seedSignedVector(t *testing.T) (v vectors.SignedVector, keyFile, pubFile string) {
	t.Helper()
	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	v = all.SignedDatagrams[0]
	dir := t.TempDir()
	keyFile, pubFile = filepath.Join(dir, "bus.key"), filepath.Join(dir, "bus.pub")
	if err := os.WriteFile(keyFile, []byte(v.PrivateKeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, []byte(v.PublicKeyPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	return v, keyFile, pubFile
}

func TestFrameDecodeSignedDatagram(t *testing.T) {
	v, _, pubFile := seedSignedVector(t)
	otherDir := t.TempDir()
	if _, _, err := token.GenerateKey(otherDir); err != nil {
		t.Fatal(err)
	}
	otherPub := filepath.Join(otherDir, "edge.pub")

	out, _, code := run(t, "", "frame", "decode", "--datagram", v.Hex)
	if code != 0 || !strings.Contains(out, "1767225600000") || !strings.Contains(out, "2026-01-01T00:00:00.000Z") ||
		!strings.Contains(out, "rows") || !strings.Contains(out, "0x13") || !verdictIs(out, "ok") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	out, _, code = run(t, "", "frame", "decode", "--datagram", "--pub", pubFile, v.Hex)
	if code != 0 || !strings.Contains(out, "verifies with --pub") {
		t.Fatalf("--pub with the right key: exit %d:\n%s", code, out)
	}
	out, _, code = run(t, "", "frame", "decode", "--json", "--datagram", "--pub", otherPub, "--pub", pubFile, v.Hex)
	var rep report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if rep.Trailer == nil || rep.Trailer.Timestamp != v.TimestampMS || rep.Trailer.Verifies == nil || !*rep.Trailer.Verifies ||
		!strings.HasSuffix(v.Hex, rep.Trailer.Signature) || len(rep.Trailer.Signature) != 128 {
		t.Fatalf("trailer %+v", rep.Trailer)
	}
	out, _, code = run(t, "", "frame", "decode", "--datagram", "--pub", otherPub, v.Hex)
	if code != 1 || !strings.Contains(out, "does not verify") || !verdictIs(out, "signature") {
		t.Fatalf("--pub with another key: exit %d:\n%s", code, out)
	}
	out, _, code = run(t, "", "frame", "decode", "--datagram", "--pub", pubFile, v.DatagramHex)
	if code != 1 || !verdictIs(out, "unsigned") {
		t.Fatalf("unsigned with --pub: exit %d:\n%s", code, out)
	}
	out, _, code = run(t, "", "frame", "decode", "--datagram", v.Hex+"00")
	if code != 1 || !verdictIs(out, "length") || strings.Contains(out, "timestamp") {
		t.Fatalf("73-byte trailer: exit %d:\n%s", code, out)
	}
	if _, errs, code := run(t, "", "frame", "decode", "--pub", pubFile, v.Hex); code != 2 || !strings.Contains(errs, "--datagram") {
		t.Fatalf("--pub without --datagram: exit %d %s", code, errs)
	}
	if _, errs, code := run(t, "", "frame", "decode", "--datagram", "--pub", filepath.Join(otherDir, "edge.key"), v.Hex); code != 2 || !strings.Contains(errs, "edge.key") {
		t.Fatalf("--pub with a private key file: exit %d %s", code, errs)
	}
	// frame check judges the length rule: a trailer passes, a wrong one is length.
	out, _, _ = run(t, v.Hex+"\n"+v.Hex+"00\n"+v.DatagramHex+"\n", "frame", "check", "--datagram")
	if out != "ok\nlength\nok\n" {
		t.Fatalf("frame check: %q", out)
	}
}

func TestFrameEncodeSigned(t *testing.T) {
	_, keyFile, pubFile := seedSignedVector(t)
	out, errs, code := run(t, "", "frame", "encode", "--datagram", "--state", "0x01a1b2c3d40000000702185000", "--key", keyFile, "update", "rows", "24")
	hexOut := strings.TrimSpace(out)
	if code != 0 || len(hexOut) != 2*99 || !strings.HasPrefix(hexOut, "01a1b2c3d40000000702185000010000000a000000000000001813") {
		t.Fatalf("exit %d %s: %q", code, errs, out)
	}
	if out, _, code := run(t, "", "frame", "decode", "--datagram", "--pub", pubFile, hexOut); code != 0 || !strings.Contains(out, "within the agents'") {
		t.Fatalf("decode of a fresh signed datagram: exit %d:\n%s", code, out)
	}
	if _, errs, code := run(t, "", "frame", "encode", "--key", keyFile, "update", "rows", "24"); code != 2 || !strings.Contains(errs, "--datagram") {
		t.Fatalf("--key without --datagram: exit %d %s", code, errs)
	}
}

// runningSignedAgent is runningAgent with bus.publicKeys.
func runningSignedAgent(t *testing.T, pubFile string) *agent.Agent {
	t.Helper()
	return runningAgentWith(t, func(c *config.Config) { c.Bus.PublicKeys = []string{pubFile} })
}

func TestConfigPushKey(t *testing.T) {
	_, keyFile, pubFile := seedSignedVector(t)
	a := runningSignedAgent(t, pubFile)
	target := fmt.Sprintf("127.0.0.1:%d", a.BusAddr().(*net.UDPAddr).Port)
	out, errs, code := run(t, "", "config", "push", "--to", target, "--deadline", "400ms", "--retry", "50ms", "rows=40")
	if code != 1 || !strings.Contains(out, "no answer") || !strings.Contains(errs, "--key FILE") || a.State().Rows != 24 {
		t.Fatalf("unsigned push: exit %d %s\n%s", code, errs, out)
	}
	out, errs, code = run(t, "", "config", "push", "--to", target, "--key", keyFile, "rows=40", "cols=120")
	if code != 0 || strings.Count(out, " yes ") != 1 || a.State().Rows != 40 || a.State().Cols != 120 || strings.Contains(errs, "note:") {
		t.Fatalf("signed push: exit %d %s\n%s", code, errs, out)
	}
	_, errs, code = run(t, "", "config", "push", "--to", target, "--key", pubFile, "rows=41")
	if code != 2 || !strings.Contains(errs, pubFile) || a.State().Rows != 40 {
		t.Fatalf("--key with a public key file: exit %d %s", code, errs)
	}
}

// verdictIs reports whether frame decode's text output ends in verdict v.
func verdictIs(out, v string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "verdict" {
			return f[1] == v
		}
	}
	return false
}
