package agent

// clearBlockList empties the token-failure block list when blocking is
// off: entries an earlier run (or an earlier config) left in the pinned
// maps would otherwise keep dropping their sources until they expire.
func (a *Agent) clearBlockList() {
	list, err := a.dp.Objects.Blocked()
	if err != nil {
		a.log.Warn("could not read the block list", "err", err)
		return
	}
	for _, e := range list {
		if err := a.dp.Objects.Unblock(e.Prefix); err != nil {
			a.log.Warn("could not clear a block-list entry", "source", e.Prefix.String(), "err", err)
		}
	}
	if len(list) > 0 {
		a.log.Info("token-failure blocking is off (proxy.tokenFailures.threshold 0): cleared the block list an earlier run left", "entries", len(list))
	}
}
