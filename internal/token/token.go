// Package token issues and verifies regedge's proxy and admin tokens
// (docs/protocol.md §4.3): JWS compact, signed with Ed25519 ({"alg":"EdDSA"}),
// verified with github.com/golang-jwt/jwt/v5 against an allow-list of one
// algorithm. Keys are PEM files: private keys PKCS#8, public keys PKIX; a
// public key's kid is its file name without the extension, so keys rotate by
// adding a file.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Scopes a token may carry, space-separated in its "scope" claim (as in
// RFC 8693 and OAuth): ScopeConfigWrite marks an admin token (it may change
// the config state); ScopeRegistryWrite lets a proxy token make requests
// other than reads (publish, unpublish, dist-tags, ...).
const (
	ScopeConfigWrite   = "config:write"
	ScopeRegistryWrite = "registry:write"
)

// HasScope reports whether the claims' space-separated scope list names
// scope.
func (c *Claims) HasScope(scope string) bool {
	for _, s := range strings.Fields(c.Scope) {
		if s == scope {
			return true
		}
	}
	return false
}

// Claims are the token's claims.
type Claims struct {
	RegistryHash   string   `json:"registryHash,omitempty"`
	RegistryHashes []string `json:"registryHashes,omitempty"`
	Scope          string   `json:"scope,omitempty"`
	jwt.RegisteredClaims
}

// Result words of regedge_token_verifications_total (docs/metrics.md).
const (
	ResultOK        = "ok"
	ResultMalformed = "malformed"
	ResultAlg       = "alg"
	ResultSignature = "signature"
	ResultExpired   = "expired"
	ResultNotYet    = "notyet"
	ResultHash      = "hash"
	ResultMissing   = "missing"
)

// Error is a failed verification; Result is the short reason code a 401
// body carries (never key material).
type Error struct {
	Result string
	Err    error
}

func (e *Error) Error() string { return "token: " + e.Result + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

var errUnknownKid = errors.New("unknown kid")

// Verifier checks tokens against a set of public keys.
type Verifier struct {
	keys   map[string]ed25519.PublicKey // by kid
	leeway time.Duration
	now    func() time.Time
}

// NewVerifier loads PKIX PEM public keys from files.
func NewVerifier(files []string, leeway time.Duration) (*Verifier, error) {
	v := &Verifier{keys: map[string]ed25519.PublicKey{}, leeway: leeway, now: time.Now}
	for _, f := range files {
		k, err := ReadPublicKey(f)
		if err != nil {
			return nil, err
		}
		v.keys[kidOf(f)] = k
	}
	return v, nil
}

func kidOf(path string) string {
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}

// Verify checks a token's signature, algorithm and times.
func (v *Verifier) Verify(tok string) (*Claims, error) {
	if tok == "" {
		return nil, &Error{ResultMissing, errors.New("no token")}
	}
	// Only EdDSA is accepted; say so before anything else is looked at.
	if alg, ok := headerAlg(tok); ok && alg != jwt.SigningMethodEdDSA.Alg() {
		return nil, &Error{ResultAlg, fmt.Errorf("alg %q is not accepted, only EdDSA", alg)}
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
	)
	var c Claims
	_, err := parser.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		if kid, ok := t.Header["kid"].(string); ok && kid != "" {
			if k, ok := v.keys[kid]; ok {
				return k, nil
			}
			return nil, fmt.Errorf("%w %q", errUnknownKid, kid)
		}
		keys := make([]jwt.VerificationKey, 0, len(v.keys))
		for _, k := range v.keys {
			keys = append(keys, k)
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	})
	if err == nil {
		return &c, nil
	}
	result := ResultSignature
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		result = ResultMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		result = ResultSignature
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		result = ResultExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		result = ResultNotYet
	case errors.Is(err, errUnknownKid):
		result = ResultSignature // no key to check it with: as good as a bad signature
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		result = ResultAlg
	}
	return nil, &Error{result, err}
}

// headerAlg reads the alg of a compact JWS header without verifying anything.
func headerAlg(tok string) (string, bool) {
	h, _, ok := strings.Cut(tok, ".")
	if !ok {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &hdr) != nil {
		return "", false
	}
	return hdr.Alg, true
}

// FromRequest returns the token of a request: X-Bun-Proxy-Token, else an
// Authorization Bearer token (what stock npm and bun clients send).
func FromRequest(r *http.Request) string { return FromHeaders(r.Header.Get) }

// FromHeaders is FromRequest for a request held elsewhere: get returns a
// header's first value ("" when absent).
func FromHeaders(get func(name string) string) string {
	if t := get("X-Bun-Proxy-Token"); t != "" {
		return t
	}
	if a := get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}

// Issue signs claims with key (EdDSA), with kid in the header when set.
func Issue(key ed25519.PrivateKey, kid string, c Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	if kid != "" {
		t.Header["kid"] = kid
	}
	return t.SignedString(key)
}

// ErrKeyExists: GenerateKey found a key pair in the directory already.
var ErrKeyExists = errors.New("token: a key already exists")

// GenerateKey writes DIR/edge.key (PKCS#8 PEM, 0600) and DIR/edge.pub (PKIX
// PEM). It never replaces either file: when one exists it returns an error
// wrapping ErrKeyExists and writes nothing (tokens signed with the old key
// would stop verifying, and a lost private key cannot be recovered).
func GenerateKey(dir string) (keyFile, pubFile string, err error) {
	return generateKey(dir, false)
}

// ReplaceKey is GenerateKey that replaces an existing pair.
func ReplaceKey(dir string) (keyFile, pubFile string, err error) {
	return generateKey(dir, true)
}

func generateKey(dir string, replace bool) (keyFile, pubFile string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	pk, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	keyFile, pubFile = filepath.Join(dir, "edge.key"), filepath.Join(dir, "edge.pub")
	if !replace {
		for _, f := range []string{keyFile, pubFile} {
			if _, err := os.Lstat(f); err == nil {
				return "", "", fmt.Errorf("%w: %s (use --force to replace it; tokens signed with it stop verifying)", ErrKeyExists, f)
			}
		}
	}
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600, replace); err != nil {
		return "", "", err
	}
	if err := writeNew(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), 0o644, replace); err != nil {
		_ = os.Remove(keyFile) // never a private key without its public half
		return "", "", err
	}
	return keyFile, pubFile, nil
}

// writeNew writes a file; without replace it must not exist (O_EXCL: a
// file created meanwhile is not overwritten either).
func writeNew(path string, data []byte, mode os.FileMode, replace bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if !replace {
		flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrKeyExists, path)
		}
		return err
	}
	if err := f.Chmod(mode); err != nil { // an existing file keeps its mode otherwise
		f.Close()
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadPrivateKey reads a PKCS#8 PEM Ed25519 private key.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("token: %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token: %s: not an Ed25519 key", path)
	}
	return ek, nil
}

// ReadPublicKey reads a PKIX PEM Ed25519 public key.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("token: %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("token: %s: not an Ed25519 key", path)
	}
	return ek, nil
}

func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("token: %s: want a PEM %q block", path, typ)
	}
	return blk.Bytes, nil
}
