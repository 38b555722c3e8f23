package config

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// A config file written for a newer agent: keys this build does not know,
// at the top, in sections, inside list items.
const newerFile = `{
  "config": {"rows": 40},
  "proxy": {"listenPort": 4999, "perClientPerMinute": 60, "upstreams": [
    {"host": "r.example", "port": 443, "hash": "0x1", "tls": true, "weight": 3, "auth": {"tokenFile": "/t", "kind": "bearer"}}
  ], "cache": {"dir": "", "shards": 4}},
  "tokens": {"publicKeys": ["/k.pub"]},
  "telemetry": {"endpoint": "https://otel.example"},
  "ADMIN": {"Listen": "127.0.0.1:9999"}
}`

// TestUnknownKeysAreWarningsAtRunErrorsInValidate: LoadLenient (regedge
// run) takes what it knows and names the rest; Load (regedge config
// validate) refuses the same file, naming a key.
func TestUnknownKeysAreWarningsAtRunErrorsInValidate(t *testing.T) {
	path := writeFile(t, newerFile)
	c, unknown, err := LoadLenient(path, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"proxy.cache.shards", "proxy.perClientPerMinute", "proxy.upstreams[0].auth.kind", "proxy.upstreams[0].weight", "telemetry"}
	if !reflect.DeepEqual(unknown, want) {
		t.Fatalf("unknown keys %q, want %q", unknown, want)
	}
	if c.Config.Rows != 40 || c.Proxy.ListenPort != 4999 || len(c.Proxy.Upstreams) != 1 || c.Proxy.Upstreams[0].Hash != 1 ||
		c.Proxy.Upstreams[0].Auth.TokenFile != "/t" || c.Admin.Listen != "127.0.0.1:9999" {
		t.Fatalf("known keys not applied: %+v", c)
	}
	_, err = Load(path, noEnv)
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("strict load: %v", err)
	}
	// Known keys stay strict.
	for _, body := range []string{
		`{"proxy": {"listenPort": "high"}, "newKey": 1}`,
		`{"agent": {"bpf": "sometimes"}, "newKey": 1}`,
		`{"config": {"rows": 40},`,
		`{"a": 1} {"b": 2}`,
		`[1, 2]`,
	} {
		lpath, spath := writeFile(t, body), writeFile(t, strings.Replace(body, `, "newKey": 1`, "", 1))
		_, _, lerr := LoadLenient(lpath, noEnv)
		_, serr := Load(spath, noEnv)
		if lerr == nil || serr == nil || strings.Replace(lerr.Error(), lpath, "F", 1) != strings.Replace(serr.Error(), spath, "F", 1) {
			t.Errorf("%s:\n lenient %v\n strict  %v", body, lerr, serr)
		}
	}
	if _, unknown, err := LoadLenient(writeFile(t, `{"proxy": {"listenPort": 4000}}`), noEnv); err != nil || len(unknown) != 0 {
		t.Fatalf("a file of known keys: %v %v", unknown, err)
	}
}

// FuzzDecodeLenient: whatever the bytes, no panic; a file strict decode
// takes, lenient decode takes the same with nothing unknown; a file only
// lenient decode takes has unknown keys, and strict decode refuses it for
// one of them.
func FuzzDecodeLenient(f *testing.F) {
	f.Add([]byte(newerFile))
	f.Add([]byte(`{"proxy":{"upstreams":[{"host":"a","port":1,"hash":2,"x":{}}]}}`))
	f.Add([]byte(`{"config":{"registryHash":"0xffffffff","new":[1,{"a":null}]}}`))
	f.Add([]byte(`{"proxy":{"scopes":{"@a":"0x1"}},"tokens":null}`))
	f.Add([]byte(`{"proxy":{"listenPort":1},"PROXY":{"listenPort":2,"x":1},"proxy":{"timeout":5}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		strict, serr := decode(bytes.NewReader(b), "f", Default())
		lenient, unknown, lerr := decodeLenient(b, "f", Default())
		switch {
		case serr == nil && (lerr != nil || len(unknown) != 0 || !reflect.DeepEqual(strict, lenient)):
			t.Fatalf("strict took it, lenient: %v %q", lerr, unknown)
		case serr != nil && lerr == nil:
			var ce *Error
			if len(unknown) == 0 || !errors.As(serr, &ce) || ce.Err.Error() != "unknown key" {
				t.Fatalf("lenient took what strict refused (%v) with unknown %q", serr, unknown)
			}
		}
	})
}
