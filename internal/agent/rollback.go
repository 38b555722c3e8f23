package agent

// SetUnknownKeys records the config file's keys this build does not know
// (config.LoadLenient), ignored at the last load: regedge_config_unknown_keys
// and one WARN naming them. An older agent runs on a newer ConfigMap
// during a rollback; `regedge config validate` is where they are errors.
func (a *Agent) SetUnknownKeys(file string, keys []string) {
	a.unknown.Set(float64(len(keys)))
	if len(keys) > 0 {
		a.log.Warn("config file has keys this build does not know: ignored (regedge config validate FILE says which, strictly)",
			"file", file, "keys", keys)
	}
}
