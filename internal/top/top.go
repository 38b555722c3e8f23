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
}

// Snapshot is the agent's counters at one moment.
type Snapshot struct {
	At         time.Time
	Mode       string // kernel or userspace
	WSClients  float64
	Registries map[string]*Registry // by registry hash label
	Drops      map[string]float64   // kernel drops by reason
	Tokens     map[string]float64   // token verifications by result
	CacheHits  float64
	CacheMiss  float64
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
	s := Snapshot{At: at, Mode: "?", Registries: map[string]*Registry{}, Drops: map[string]float64{}, Tokens: map[string]float64{}}
	reg := func(h string) *Registry {
		if s.Registries[h] == nil {
			s.Registries[h] = &Registry{}
		}
		return s.Registries[h]
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
	each("regedge_proxy_requests_total", func(l map[string]string, v float64) { reg(l["registry_hash"]).Requests += v })
	each("regedge_kernel_drops_total", func(l map[string]string, v float64) { s.Drops[l["reason"]] += v })
	each("regedge_token_verifications_total", func(l map[string]string, v float64) { s.Tokens[l["result"]] += v })
	each("regedge_cache_hits_total", func(_ map[string]string, v float64) { s.CacheHits = v })
	each("regedge_cache_misses_total", func(_ map[string]string, v float64) { s.CacheMiss = v })
	return s, nil
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
// characters. Without a previous snapshot rates show as "-".
func Render(prev, cur Snapshot, width, height int) string {
	dt := cur.At.Sub(prev.At).Seconds()
	rate := func(now, before float64) string {
		if prev.At.IsZero() || dt <= 0 {
			return "-"
		}
		return human((now - before) / dt)
	}
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }

	hit := "-"
	if total := cur.CacheHits + cur.CacheMiss; total > 0 {
		hit = fmt.Sprintf("%.0f%%", 100*cur.CacheHits/total)
	}
	add("regedge top   %s   bpf %s   websocket clients %.0f   cache hit rate %s", cur.At.Format("15:04:05"), cur.Mode, cur.WSClients, hit)
	add("")
	add("%-14s %12s %12s %12s", "REGISTRY HASH", "PACKETS/S", "BYTES/S", "REQUESTS/S")
	hashes := make([]string, 0, len(cur.Registries))
	for h := range cur.Registries {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	// Rows for registries fit what the terminal leaves after the other sections.
	room := height - 10 - len(cur.Drops)/3
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
			p = &Registry{}
		}
		add("%-14s %12s %12s %12s", h, rate(c.Packets, p.Packets), rate(c.Bytes, p.Bytes), rate(c.Requests, p.Requests))
	}
	if len(hashes) == 0 {
		add("%-14s", "(no traffic yet)")
	}
	add("")
	lines = append(lines, row("DROPS/S", cur.Drops, prev.Drops, rate, width)...)
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
