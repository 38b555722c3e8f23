package agent

import (
	"encoding/json"
	"strings"
)

// redacted replaces a secret's value in EffectiveConfig.
const redacted = "[redacted]"

// EffectiveConfig is the configuration the agent runs with, as JSON
// values, with every string whose key names a secret (token, secret,
// password, passphrase, private key, credential) replaced by "[redacted]". File names
// stay (tokenFile, keys, certificates: where a secret is, not the secret;
// the files are never read into it), so do public keys.
func (a *Agent) EffectiveConfig() any {
	b, err := json.Marshal(a.cfg)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return map[string]string{"error": err.Error()}
	}
	return redact(v)
}

// secretKey: a config key whose value would be a secret itself.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	if strings.HasSuffix(k, "file") || strings.HasSuffix(k, "files") || strings.Contains(k, "public") || k == "tokens" {
		return false
	}
	for _, w := range []string{"token", "secret", "password", "passphrase", "privatekey", "credential"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

func redact(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if _, str := e.(string); str && e != "" && secretKey(k) { // secrets are strings; sections are not
				v[k] = redacted
				continue
			}
			v[k] = redact(e)
		}
	case []any:
		for i := range v {
			v[i] = redact(v[i])
		}
	}
	return v
}

// RecentLogs are the agent's last log lines (the logging ring; none when
// the agent was built without WithOutput).
func (a *Agent) RecentLogs() []byte {
	if a.output == nil {
		return nil
	}
	return a.output.Ring.Bytes()
}
