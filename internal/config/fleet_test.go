package config

import (
	"errors"
	"strings"
	"testing"
)

func TestFleetSettings(t *testing.T) {
	c := Default()
	if c.Fleet.Listen != "0.0.0.0:4875" || len(c.Fleet.Peers) != 0 || c.Fleet.ResolveInterval != 10000 {
		t.Fatalf("defaults: %+v", c.Fleet)
	}
	// Chosen from BenchmarkPackumentRevalidation (docs/benchmarks.md).
	if c.Proxy.Cache.PackumentTTL != 60000 {
		t.Fatalf("default packumentTTL %d, want 60000", c.Proxy.Cache.PackumentTTL)
	}
	c, err := Load(writeFile(t, `{"fleet":{"listen":"[::]:4875","peers":["10.0.0.7:4875","dns:regedge-fleet.regedge.svc.cluster.local:4875"]}}`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Fleet.Listen != "[::]:4875" || len(c.Fleet.Peers) != 2 {
		t.Fatalf("file: %+v", c.Fleet)
	}
	c, err = Load("", envOf(map[string]string{
		"REGEDGE_FLEET_LISTEN": "", "REGEDGE_FLEET_PEERS": "dns:edges.example:4875, [2001:db8::7]:4875",
		"REGEDGE_FLEET_RESOLVE_INTERVAL": "2000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Fleet.Listen != "" || strings.Join(c.Fleet.Peers, ",") != "dns:edges.example:4875,[2001:db8::7]:4875" || c.Fleet.ResolveInterval != 2000 {
		t.Fatalf("env: %+v", c.Fleet)
	}

	for _, tc := range []struct{ body, key, says string }{
		{`{"fleet":{"listen":"regedge.local:4875"}}`, "fleet.listen", "not a name"},
		{`{"fleet":{"listen":"4875"}}`, "fleet.listen", "want IP:PORT"},
		{`{"fleet":{"peers":["10.0.0.7:4875","edges.example:4875"]}}`, "fleet.peers[1]", "dns:NAME:PORT"},
		{`{"fleet":{"peers":["dns:edges.example"]}}`, "fleet.peers[0]", "want dns:NAME:PORT"},
		{`{"fleet":{"peers":["10.0.0.7:0"]}}`, "fleet.peers[0]", "port"},
		{`{"fleet":{"resolveInterval":0}}`, "fleet.resolveInterval", "> 0"},
		{`{"fleet":{"peer":[]}}`, "peer", "unknown key"},
	} {
		_, err := Load(writeFile(t, tc.body), noEnv)
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: err %v, want one naming %s and saying %q", tc.body, err, tc.key, tc.says)
		}
	}
	for name, val := range map[string]string{
		"REGEDGE_FLEET_LISTEN": "anywhere:4875", "REGEDGE_FLEET_PEERS": "10.0.0.7:4875,nope",
		"REGEDGE_FLEET_RESOLVE_INTERVAL": "10s",
	} {
		_, err := Load("", envOf(map[string]string{name: val}))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != name || ce.Source != "environment" {
			t.Errorf("%s=%s: err %v, want one naming the variable", name, val, err)
		}
	}
}
