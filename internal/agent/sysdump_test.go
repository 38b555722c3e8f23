package agent

import (
	"encoding/json"
	"testing"
)

// TestRedactSecrets: strings under secret-named keys go, at any depth;
// file names, public keys and sections whose names merely contain a word
// stay.
func TestRedactSecrets(t *testing.T) {
	var v any
	json.Unmarshal([]byte(`{
	  "proxy": {"upstreams": [{"host": "r", "auth": {"tokenFile": "/etc/t", "token": "abc", "password": "pw"}}],
	            "tokenFailures": {"threshold": 0}, "tls": {"cert": "/c", "key": "/k"}},
	  "tokens": {"publicKeys": ["/p.pub"]},
	  "bus": {"sharedSecret": "s", "privateKey": "-----BEGIN", "publicKeys": []},
	  "empty": {"token": ""}
	}`), &v)
	b, _ := json.Marshal(redact(v))
	want := `{"bus":{"privateKey":"[redacted]","publicKeys":[],"sharedSecret":"[redacted]"},"empty":{"token":""},` +
		`"proxy":{"tls":{"cert":"/c","key":"/k"},"tokenFailures":{"threshold":0},"upstreams":[{"auth":{"password":"[redacted]","token":"[redacted]","tokenFile":"/etc/t"},"host":"r"}]},` +
		`"tokens":{"publicKeys":["/p.pub"]}}`
	if string(b) != want {
		t.Fatalf("\n got %s\nwant %s", b, want)
	}
}
