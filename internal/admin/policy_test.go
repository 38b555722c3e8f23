package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/regedge/regedge/internal/token"
)

func TestTokenAuthorizer(t *testing.T) {
	keyFile, pubFile, err := token.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier([]string{pubFile}, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, err := token.ReadPrivateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	exp := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
	adminTok, err := token.Issue(key, "", token.Claims{Scope: token.ScopeConfigWrite, RegisteredClaims: exp})
	if err != nil {
		t.Fatal(err)
	}
	plainTok, err := token.Issue(key, "", token.Claims{RegisteredClaims: exp})
	if err != nil {
		t.Fatal(err)
	}
	past := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Hour))}
	expiredTok, err := token.Issue(key, "", token.Claims{Scope: token.ScopeConfigWrite, RegisteredClaims: past})
	if err != nil {
		t.Fatal(err)
	}
	authz := TokenAuthorizer(v)
	for _, tc := range []struct {
		name, header, value string
		result              string // "" when admitted, else the *token.Error result
	}{
		{"admin token as Bearer", "Authorization", "Bearer " + adminTok, ""},
		{"admin token in X-Bun-Proxy-Token", "X-Bun-Proxy-Token", adminTok, ""},
		{"a token without scope config:write", "Authorization", "Bearer " + plainTok, "scope"},
		{"an expired admin token", "Authorization", "Bearer " + expiredTok, token.ResultExpired},
		{"no token", "Accept", "*/*", token.ResultMissing},
		{"garbage", "Authorization", "Bearer garbage", token.ResultMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodPut, "http://x/", nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set(tc.header, tc.value)
			err = authz(r)
			var te *token.Error
			switch {
			case tc.result == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.result != "" && (!errors.As(err, &te) || te.Result != tc.result):
				t.Fatalf("authorizer said %v, want a *token.Error with result %q", err, tc.result)
			}
		})
	}
}

func TestOnLoopbackListener(t *testing.T) {
	for _, tc := range []struct {
		local string // "" for a request without a local address
		want  bool
	}{
		{"127.0.0.1:9873", true},
		{"127.1.2.3:9873", true},
		{"[::1]:9873", true},
		{"[::ffff:127.0.0.1]:9873", true},
		{"192.0.2.2:9873", false},
		{"[2001:db8::1]:9873", false},
		{"0.0.0.0:9873", false},
		{"", false},
	} {
		t.Run(tc.local, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodPut, "http://x/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.local != "" {
				addr, err := net.ResolveTCPAddr("tcp", tc.local)
				if err != nil {
					t.Fatal(err)
				}
				r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(addr)))
			}
			if got := OnLoopbackListener(r); got != tc.want {
				t.Fatalf("OnLoopbackListener on %q = %v, want %v", tc.local, got, tc.want)
			}
		})
	}
}
