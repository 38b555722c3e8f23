// Package top is `regedge top`: a live view of a running agent, read from
// its admin listener's /metrics every second. The view is a pure function of
// two snapshots and a terminal size (Render), so it is tested directly; the
// bubbletea program around it only fetches, ticks and quits.
package top

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/regedge/regedge/internal/admin"
)

// Registry is one registry hash's counters.
type Registry struct {
	Packets, Bytes, Requests float64
	// Status counts requests by class: "2xx", "3xx", "4xx", "5xx edge"
	// (the edge's own answers) and "5xx upstream".
	Status  map[string]float64
	Latency Histogram // regedge_proxy_request_duration_seconds
}

// Histogram is a cumulative histogram: counts at or below each bound.
type Histogram struct {
	Bounds []float64 // ascending, +Inf last
	Counts []float64 // cumulative, per bound
}

// Upstream is one upstream's health and latency.
type Upstream struct {
	Up, BreakerOpen bool
	Latency         Histogram // regedge_upstream_request_duration_seconds
}

// Snapshot is the agent's counters at one moment.
type Snapshot struct {
	At         time.Time
	Mode       string // kernel or userspace
	WSClients  float64
	Registries map[string]*Registry // by registry hash label
	Upstreams  map[string]*Upstream // by host:port
	Drops      map[string]float64   // kernel drops by reason
	Tokens     map[string]float64   // token verifications by result
	CacheHits  float64
	CacheMiss  float64
	HasCache   bool // the agent exports cache metrics (proxy.cache.dir set)
}

// Fetch reads a snapshot from an agent's admin listener.
func Fetch(ctx context.Context, c *admin.Client) (Snapshot, error) {
	text, err := c.Metrics(ctx)
	if err != nil {
		return Snapshot{}, fmt.Errorf("top: %w", err)
	}
	return Parse(bytes.NewReader(text), time.Now())
}

// Parse reads a snapshot from Prometheus text.
func Parse(r io.Reader, at time.Time) (Snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Snapshot{}, fmt.Errorf("top: metrics: %w", err)
	}
	s := Snapshot{At: at, Mode: "?", Registries: map[string]*Registry{}, Upstreams: map[string]*Upstream{},
		Drops: map[string]float64{}, Tokens: map[string]float64{}}
	reg := func(h string) *Registry {
		if s.Registries[h] == nil {
			s.Registries[h] = &Registry{Status: map[string]float64{}}
		}
		return s.Registries[h]
	}
	upstream := func(name string) *Upstream {
		if s.Upstreams[name] == nil {
			s.Upstreams[name] = &Upstream{Up: true}
		}
		return s.Upstreams[name]
	}
	histograms := func(name, label string, into func(key string) *Histogram) {
		f := fams[name]
		if f == nil {
			return
		}
		for _, m := range f.Metric {
			if m.Histogram == nil {
				continue
			}
			key := ""
			for _, l := range m.Label {
				if l.GetName() == label {
					key = l.GetValue()
				}
			}
			into(key).add(m.Histogram)
		}
	}
	each := func(name string, fn func(labels map[string]string, v float64)) {
		f := fams[name]
		if f == nil {
			return
		}
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			fn(labels, value(m))
		}
	}
	each("regedge_bpf_mode", func(l map[string]string, v float64) {
		if v == 1 {
			s.Mode = l["mode"]
		}
	})
	each("regedge_ws_clients", func(_ map[string]string, v float64) { s.WSClients = v })
	each("regedge_registry_packets_total", func(l map[string]string, v float64) { reg(l["registry_hash"]).Packets += v })
	each("regedge_registry_bytes_total", func(l map[string]string, v float64) { reg(l["registry_hash"]).Bytes += v })
	each("regedge_proxy_requests_total", func(l map[string]string, v float64) {
		r := reg(l["registry_hash"])
		r.Requests += v
		r.Status[statusClass(l["code"], l["answered_by"])] += v
	})
	histograms("regedge_proxy_request_duration_seconds", "registry_hash", func(h string) *Histogram { return &reg(h).Latency })
	each("regedge_upstream_up", func(l map[string]string, v float64) { upstream(l["upstream"]).Up = v == 1 })
	each("regedge_upstream_breaker_open", func(l map[string]string, v float64) { upstream(l["upstream"]).BreakerOpen = v == 1 })
	histograms("regedge_upstream_request_duration_seconds", "upstream", func(u string) *Histogram { return &upstream(u).Latency })
	each("regedge_kernel_drops_total", func(l map[string]string, v float64) { s.Drops[l["reason"]] += v })
	each("regedge_token_verifications_total", func(l map[string]string, v float64) { s.Tokens[l["result"]] += v })
	each("regedge_cache_hits_total", func(_ map[string]string, v float64) { s.CacheHits, s.HasCache = v, true })
	each("regedge_cache_misses_total", func(_ map[string]string, v float64) { s.CacheMiss = v })
	return s, nil
}

// statusClass is a request's column in the status split: the class of its
// code, the 5xx split by who answered.
func statusClass(code, answeredBy string) string {
	if len(code) != 3 {
		return "other"
	}
	switch code[0] {
	case '2', '3', '4':
		return code[:1] + "xx"
	case '5':
		if answeredBy == "edge" {
			return "5xx edge"
		}
		return "5xx upstream"
	}
	return "other"
}

// add sums a histogram sample into h (several label sets share a key).
func (h *Histogram) add(m *dto.Histogram) {
	if len(h.Bounds) == 0 {
		for _, b := range m.Bucket {
			h.Bounds = append(h.Bounds, b.GetUpperBound())
		}
		h.Bounds = append(h.Bounds, math.Inf(1))
		h.Counts = make([]float64, len(h.Bounds))
	}
	if len(m.Bucket)+1 != len(h.Bounds) {
		return // another layout: not summable
	}
	for i, b := range m.Bucket {
		h.Counts[i] += float64(b.GetCumulativeCount())
	}
	h.Counts[len(h.Counts)-1] += float64(m.GetSampleCount())
}

// quantile is the q-quantile of the observations between prev and cur, as
// Prometheus's histogram_quantile estimates it (linear within a bucket;
// the largest finite bound for the +Inf bucket); ok is false without
// observations in between.
func quantile(q float64, prev, cur Histogram) (float64, bool) {
	n := len(cur.Counts)
	if n == 0 {
		return 0, false
	}
	delta := func(i int) float64 {
		if len(prev.Counts) == n {
			return cur.Counts[i] - prev.Counts[i]
		}
		return cur.Counts[i]
	}
	total := delta(n - 1)
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i := 0; i < n; i++ {
		c := delta(i)
		if c >= rank {
			if math.IsInf(cur.Bounds[i], 1) {
				if i == 0 {
					return 0, false
				}
				return cur.Bounds[i-1], true
			}
			if c == below {
				return cur.Bounds[i], true
			}
			return lower + (cur.Bounds[i]-lower)*(rank-below)/(c-below), true
		}
		lower, below = cur.Bounds[i], c
	}
	return 0, false
}

// seconds formats a duration in seconds in at most 6 characters.
func seconds(s float64) string {
	switch {
	case s >= 10:
		return fmt.Sprintf("%.0fs", s)
	case s >= 1:
		return fmt.Sprintf("%.1fs", s)
	case s >= 0.01:
		return fmt.Sprintf("%.0fms", s*1000)
	case s >= 0.001:
		return fmt.Sprintf("%.1fms", s*1000)
	}
	return fmt.Sprintf("%.0fus", s*1e6)
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// Render draws the view of cur (rates against prev) in width x height
// characters. Without a previous snapshot rates show as "-"; a figure that
// does not apply (kernel counters in userspace mode, a cache that is off)
// shows as "n/a".
func Render(prev, cur Snapshot, width, height int) string {
	dt := cur.At.Sub(prev.At).Seconds()
	rate := func(now, before float64) string {
		if prev.At.IsZero() || dt <= 0 {
			return "-"
		}
		return human((now - before) / dt)
	}
	pct := func(q float64, p, c Histogram) string {
		if prev.At.IsZero() {
			return "-"
		}
		v, ok := quantile(q, p, c)
		if !ok {
			return "-"
		}
		return seconds(v)
	}
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }

	hit := "n/a"
	if cur.HasCache {
		hit = "-"
		if total := cur.CacheHits + cur.CacheMiss; total > 0 {
			hit = fmt.Sprintf("%.0f%%", 100*cur.CacheHits/total)
		}
	}
	kernel := cur.Mode == "kernel"
	add("regedge top   %s   bpf %s   websocket clients %.0f   cache hit rate %s", cur.At.Format("15:04:05"), cur.Mode, cur.WSClients, hit)
	add("")
	const regRow = "%-11s %7s %7s %6s %6s %5s %5s %9s %6s %6s"
	add(regRow, "REGISTRY", "PKT/S", "BYTES/S", "REQ/S", "2XX/S", "3XX/S", "4XX/S", "5XX/S E/U", "P50", "P99")
	hashes := make([]string, 0, len(cur.Registries))
	for h := range cur.Registries {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	// Rows for registries and upstreams fit what the terminal leaves
	// after the other sections.
	room := height - 12 - len(cur.Drops)/3 - len(cur.Upstreams)
	if room < 1 {
		room = 1
	}
	for i, h := range hashes {
		if i == room && len(hashes) > room {
			add("… %d more", len(hashes)-room)
			break
		}
		c, p := cur.Registries[h], prev.Registries[h]
		if p == nil {
			p = &Registry{Status: map[string]float64{}}
		}
		pk, by := "n/a", "n/a"
		if kernel {
			pk, by = rate(c.Packets, p.Packets), rate(c.Bytes, p.Bytes)
		}
		st := func(k string) string { return rate(c.Status[k], p.Status[k]) }
		add(regRow, h, pk, by, rate(c.Requests, p.Requests), st("2xx"), st("3xx"), st("4xx"),
			st("5xx edge")+"/"+st("5xx upstream"), pct(0.5, p.Latency, c.Latency), pct(0.99, p.Latency, c.Latency))
	}
	if len(hashes) == 0 {
		add("%-11s", "(no traffic yet)")
	}
	if len(cur.Upstreams) > 0 {
		add("")
		const upRow = "%-30s %-14s %6s %6s"
		add(upRow, "UPSTREAM", "STATE", "P50", "P99")
		names := make([]string, 0, len(cur.Upstreams))
		for n := range cur.Upstreams {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			u, pu := cur.Upstreams[n], prev.Upstreams[n]
			if pu == nil {
				pu = &Upstream{}
			}
			state := "up"
			switch {
			case u.BreakerOpen:
				state = "BREAKER OPEN"
			case !u.Up:
				state = "DOWN"
			}
			add(upRow, n, state, pct(0.5, pu.Latency, u.Latency), pct(0.99, pu.Latency, u.Latency))
		}
	}
	add("")
	if kernel {
		lines = append(lines, row("DROPS/S", cur.Drops, prev.Drops, rate, width)...)
	} else {
		add("%-10s n/a (userspace mode: no kernel datapath)", "DROPS/S")
	}
	lines = append(lines, row("TOKENS/S", cur.Tokens, prev.Tokens, rate, width)...)
	add("")
	add("q to quit")
	for i, l := range lines {
		if len([]rune(l)) > width {
			lines[i] = string([]rune(l)[:width])
		}
	}
	if len(lines) > height {
		lines = lines[:height]
	}
	return strings.Join(lines, "\n")
}

// row lays out "NAME  key value  key value ..." wrapped at width.
func row(title string, cur, prev map[string]float64, rate func(a, b float64) string, width int) []string {
	keys := make([]string, 0, len(cur))
	for k := range cur {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	line := fmt.Sprintf("%-10s", title)
	for _, k := range keys {
		cell := fmt.Sprintf(" %s %s", k, rate(cur[k], prev[k]))
		if len(line)+len(cell) > width {
			out = append(out, line)
			line = fmt.Sprintf("%-10s", "")
		}
		line += cell
	}
	if len(keys) == 0 {
		line += " -"
	}
	return append(out, line)
}

func human(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.1f", v)
}

// Model is the bubbletea model of the live view.
type Model struct {
	agent         *admin.Client
	prev, cur     Snapshot
	width, height int
	err           error
}

type snapMsg struct {
	s   Snapshot
	err error
}

type tickMsg struct{}

// New returns the live view of the agent whose admin listener c reaches
// (give it a short timeout: a fetch runs every second).
func New(c *admin.Client) Model {
	return Model{agent: c, width: 80, height: 24}
}

func (m Model) fetch() tea.Cmd {
	return func() tea.Msg {
		s, err := Fetch(context.Background(), m.agent)
		return snapMsg{s, err}
	}
}

// Init fetches the first snapshot.
func (m Model) Init() tea.Cmd { return m.fetch() }

// Update handles sizes, snapshots, ticks and keys.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "ctrl+c", "esc":
			return m, tea.Quit
		}
	case snapMsg:
		m.err = msg.err
		if msg.err == nil {
			m.prev, m.cur = m.cur, msg.s
		}
		return m, tea.Tick(time.Second, func(time.Time) tea.Msg { return tickMsg{} })
	case tickMsg:
		return m, m.fetch()
	}
	return m, nil
}

// View draws the current snapshot on the alternate screen.
func (m Model) View() tea.View {
	v := tea.NewView(m.text())
	v.AltScreen = true
	return v
}

// text is the view as plain text.
func (m Model) text() string {
	if m.err != nil && m.cur.At.IsZero() {
		return fmt.Sprintf("regedge top: %v\n(q to quit)", m.err)
	}
	v := Render(m.prev, m.cur, m.width, m.height)
	if m.err != nil {
		v += "\n(last refresh failed: " + m.err.Error() + ")"
	}
	return v
}
