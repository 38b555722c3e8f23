package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenKeygenIssueVerify(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := run(t, "", "token", "keygen", "--out", dir); code != 0 {
		t.Fatalf("keygen: %d %s", code, errs)
	}
	out, errs, code := run(t, "", "token", "issue", "--key", filepath.Join(dir, "edge.key"), "--hash", "0xa1b2c3d4,0", "--sub", "@mycompany", "--ttl", "1h", "--scope", "config:write")
	if code != 0 || strings.Count(strings.TrimSpace(out), ".") != 2 || strings.Contains(strings.TrimSpace(out), "\n") {
		t.Fatalf("issue: %d %q %s", code, out, errs)
	}
	tok := strings.TrimSpace(out)
	out, _, code = run(t, "", "token", "verify", "--pub", filepath.Join(dir, "edge.pub"), tok)
	if code != 0 || !strings.Contains(out, `"0xa1b2c3d4"`) || !strings.Contains(out, `"0x00000000"`) || !strings.Contains(out, `"config:write"`) {
		t.Fatalf("verify: %d\n%s", code, out)
	}
	_, errs, code = run(t, "", "token", "verify", "--pub", filepath.Join(dir, "edge.pub"), tok[:len(tok)-3]+"abc")
	if code != 1 || !strings.Contains(errs, "signature") {
		t.Fatalf("tampered: %d %s", code, errs)
	}
}
