package token

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/regedge/regedge/internal/testutil"
)

func keys(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	dir := t.TempDir()
	kf, pf, err := GenerateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(kf); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	k, err := ReadPrivateKey(kf)
	if err != nil {
		t.Fatal(err)
	}
	return k, pf
}

func claims(exp time.Duration) Claims {
	now := time.Now()
	return Claims{RegistryHash: "0xa1b2c3d4", RegisteredClaims: jwt.RegisteredClaims{
		Subject: "@mycompany", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(exp)),
	}}
}

func TestVerifyResults(t *testing.T) {
	k, pub := keys(t)
	v, err := NewVerifier([]string{pub}, 0)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := Issue(k, "edge", claims(time.Hour))
	expired, _ := Issue(k, "", claims(-time.Hour))
	future := claims(2 * time.Hour)
	future.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	notyet, _ := Issue(k, "", future)
	noExp := claims(time.Hour)
	noExp.ExpiresAt = nil
	missingExp, _ := Issue(k, "", noExp)
	k2, _ := keys(t)
	wrongKey, _ := Issue(k2, "", claims(time.Hour))
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(time.Hour))
	hmac, _ := hs.SignedString([]byte("secret"))
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"exp":9999999999}`)) + "."
	for name, tc := range map[string]struct {
		tok  string
		want string
	}{
		"good":         {good, ResultOK},
		"expired":      {expired, ResultExpired},
		"not yet":      {notyet, ResultNotYet},
		"no exp":       {missingExp, ResultExpired},
		"wrong key":    {wrongKey, ResultSignature},
		"HMAC":         {hmac, ResultAlg},
		"alg none":     {none, ResultAlg},
		"garbage":      {"not.a.token", ResultMalformed},
		"missing":      {"", ResultMissing},
		"tampered sig": {good[:len(good)-4] + "AAAA", ResultSignature},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := v.Verify(tc.tok)
			got := ResultOK
			var te *Error
			if errors.As(err, &te) {
				got = te.Result
			} else if err != nil {
				got = "untyped: " + err.Error()
			}
			if got != tc.want {
				t.Errorf("%s: %s (%v), want %s", name, got, err, tc.want)
			}
			if tc.want == ResultOK && (c == nil || c.Subject != "@mycompany" || c.RegistryHash != "0xa1b2c3d4") {
				t.Errorf("%s: claims %+v", name, c)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE") {
				t.Errorf("%s: error mentions key material", name)
			}
		})
	}
}

// TestExpiryOnTheVerifiersClock: a token is good until its exp plus the
// leeway and expired from that instant on, and not good before its nbf less the
// leeway, on the verifier's clock (the test's, so nothing waits).
func TestExpiryOnTheVerifiersClock(t *testing.T) {
	k, pub := keys(t)
	start := time.Unix(1_700_000_000, 0)
	c := Claims{RegistryHash: "0xa1b2c3d4", RegisteredClaims: jwt.RegisteredClaims{
		NotBefore: jwt.NewNumericDate(start.Add(time.Minute)), ExpiresAt: jwt.NewNumericDate(start.Add(time.Hour)),
	}}
	tok, err := Issue(k, "", c)
	if err != nil {
		t.Fatal(err)
	}
	for _, leeway := range []time.Duration{0, 30 * time.Second} {
		v, err := NewVerifier([]string{pub}, leeway)
		if err != nil {
			t.Fatal(err)
		}
		clock := testutil.NewClock(start)
		v.now = clock.Now
		result := func() string {
			_, err := v.Verify(tok)
			var te *Error
			if errors.As(err, &te) {
				return te.Result
			} else if err != nil {
				return "untyped: " + err.Error()
			}
			return ResultOK
		}
		for _, step := range []struct {
			at   time.Duration // from start
			want string
		}{
			{time.Minute - leeway - time.Second, ResultNotYet},
			{time.Minute - leeway, ResultOK},
			{time.Hour + leeway - time.Second, ResultOK},
			{time.Hour + leeway, ResultExpired}, // RFC 7519 4.1.4: "on or after" exp
			{time.Hour + leeway + time.Second, ResultExpired},
		} {
			clock.Advance(start.Add(step.at).Sub(clock.Now()))
			if got := result(); got != step.want {
				t.Errorf("leeway %v, at start+%v: %s, want %s", leeway, step.at, got, step.want)
			}
		}
	}
}

func TestKidSelectsKey(t *testing.T) {
	dir := t.TempDir()
	k1, p1 := keys(t)
	k2, p2 := keys(t)
	a, b := filepath.Join(dir, "old.pub"), filepath.Join(dir, "new.pub")
	os.Rename(p1, a)
	os.Rename(p2, b)
	v, err := NewVerifier([]string{a, b}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for kid, k := range map[string]ed25519.PrivateKey{"old": k1, "new": k2} {
		tok, _ := Issue(k, kid, claims(time.Hour))
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("kid %s: %v", kid, err)
		}
	}
	tok, _ := Issue(k1, "new", claims(time.Hour)) // signed by the other key
	if _, err := v.Verify(tok); err == nil {
		t.Error("a token whose kid names another key verified")
	}
}

func TestScopesAreSpaceSeparated(t *testing.T) {
	c := Claims{Scope: "registry:write  config:write"}
	if !c.HasScope(ScopeRegistryWrite) || !c.HasScope(ScopeConfigWrite) || c.HasScope("registry") || c.HasScope("") {
		t.Fatalf("HasScope over %q", c.Scope)
	}
	if (&Claims{Scope: "registry:writeconfig:write"}).HasScope(ScopeRegistryWrite) {
		t.Fatal("a scope matched as a prefix of another word")
	}
	if !(&Claims{Scope: ScopeRegistryWrite + " " + ScopeConfigWrite}).HasScope(ScopeConfigWrite) {
		t.Fatal("an admin token may carry more scopes than config:write")
	}
}

func TestGenerateKeyNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	kf, pf, err := GenerateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(kf)
	pub, _ := os.ReadFile(pf)
	if _, _, err := GenerateKey(dir); !errors.Is(err, ErrKeyExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second keygen: %v, want ErrKeyExists naming --force", err)
	}
	// Only the public half there: still refused, nothing written.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "edge.pub"), pub, 0o644)
	if _, _, err := GenerateKey(other); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("keygen over a lone edge.pub: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, "edge.key")); !os.IsNotExist(err) {
		t.Fatal("a refused keygen wrote edge.key")
	}
	if k2, _ := os.ReadFile(kf); string(k2) != string(key) {
		t.Fatal("the refused keygen changed the key")
	}
	if _, _, err := ReplaceKey(dir); err != nil {
		t.Fatal(err)
	}
	if k2, _ := os.ReadFile(kf); string(k2) == string(key) {
		t.Fatal("ReplaceKey kept the old key")
	}
	if st, _ := os.Stat(kf); st.Mode().Perm() != 0o600 {
		t.Fatalf("replaced key mode %v", st.Mode())
	}
}
