package main

import (
	"os"
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

// TestTokenKeygenRefusesToOverwrite: a second keygen into the same
// directory fails, naming the file and --force, and leaves the key as it
// was; --force replaces it.
func TestTokenKeygenRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := run(t, "", "token", "keygen", "--out", dir); code != 0 {
		t.Fatalf("keygen: %d %s", code, errs)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "edge.key"))
	_, errs, code := run(t, "", "token", "keygen", "--out", dir)
	if code != 1 || !strings.Contains(errs, "edge.key") || !strings.Contains(errs, "--force") {
		t.Fatalf("second keygen: exit %d, %s; want 1 naming the file and --force", code, errs)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "edge.key")); string(after) != string(before) {
		t.Fatal("the refused keygen changed edge.key")
	}
	if _, errs, code := run(t, "", "token", "keygen", "--out", dir, "--force"); code != 0 {
		t.Fatalf("keygen --force: %d %s", code, errs)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "edge.key")); string(after) == string(before) {
		t.Fatal("keygen --force kept the old key")
	}
}

// TestTokenIssueScopes: --scope is repeatable; the claim lists the scopes
// space-separated; an unknown scope is a usage error.
func TestTokenIssueScopes(t *testing.T) {
	dir := t.TempDir()
	run(t, "", "token", "keygen", "--out", dir)
	key := filepath.Join(dir, "edge.key")
	out, errs, code := run(t, "", "token", "issue", "--key", key, "--hash", "0xa1b2c3d4", "--sub", "ci", "--ttl", "1h",
		"--scope", "registry:write", "--scope", "config:write")
	if code != 0 {
		t.Fatalf("issue: %d %s", code, errs)
	}
	out, _, code = run(t, "", "token", "verify", "--pub", filepath.Join(dir, "edge.pub"), strings.TrimSpace(out))
	if code != 0 || !strings.Contains(out, `"scope": "registry:write config:write"`) {
		t.Fatalf("verify: %d\n%s", code, out)
	}
	if _, errs, code := run(t, "", "token", "issue", "--key", key, "--hash", "0xa1b2c3d4", "--ttl", "1h", "--scope", "registry:wrte"); code != 2 || !strings.Contains(errs, "registry:wrte") {
		t.Fatalf("unknown scope: %d %s", code, errs)
	}
}
