package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// WithBuildInfo exports regedge_build_info{version,commit} 1: which build
// each agent of a fleet runs is one query.
func WithBuildInfo(version, commit string) Option {
	return func(a *Agent) { a.version, a.commit = version, commit }
}

// stateInfo is regedge_config_state_info{dump} 1, read at scrape time:
// the agents whose state differs from the fleet's are one query
// (count by (dump) (regedge_config_state_info)).
type stateInfo struct {
	a    *Agent
	desc *prometheus.Desc
}

func newStateInfo(a *Agent) *stateInfo {
	return &stateInfo{a: a, desc: prometheus.NewDesc("regedge_config_state_info",
		"1, labelled with the agent's current config state as its X-Bun-Config-Dump.", []string{"dump"}, nil)}
}

func (s *stateInfo) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *stateInfo) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, 1, s.a.State().Dump())
}

// fleetCollectors are the build and state info metrics.
func (a *Agent) fleetCollectors() []prometheus.Collector {
	version, commit := a.version, a.commit
	if version == "" {
		version = "dev"
	}
	if commit == "" {
		commit = "unknown"
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regedge_build_info", Help: "1, labelled with the agent's version and commit.",
	}, []string{"version", "commit"})
	build.WithLabelValues(version, commit).Set(1)
	return []prometheus.Collector{build, newStateInfo(a)}
}
