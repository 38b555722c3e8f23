// Tests of the deploy files: what can be checked without a container engine
// or a cluster. Manifests decode strictly into their API types, the agent's
// own config loader accepts the ConfigMap and the compose environment, the
// systemd unit passes systemd-analyze, the Vagrantfile passes ruby -c, the
// Dockerfile builds with the README's make target, and the Grafana
// dashboard queries only metrics a running agent exports.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKubernetesManifestsDecodeStrictly decodes the committed plain
// manifests (rendered from the chart: TestPlainManifestsAreTheChartsOutput)
// into their API types and checks what an operator relies on: no Secret
// anywhere (a later apply must not overwrite real keys), kustomizations that
// name every manifest, the pod-security label, a node-local Service without
// the admin port, the fleet's headless Service, and a config the agent's
// own loader accepts.
func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	core := decodeManifests(t, "kubernetes/regedge.yaml", read(t, "kubernetes/regedge.yaml"))
	mon := decodeManifests(t, "kubernetes/monitoring/monitoring.yaml", read(t, "kubernetes/monitoring/monitoring.yaml"))
	ds := core.daemonSet(t)
	checkDaemonSet(t, ds)
	if len(core.ServiceMonitors)+len(core.Rules) != 0 || len(mon.ServiceMonitors) != 1 || len(mon.Rules) != 1 || len(mon.DaemonSets) != 0 {
		t.Error("the Prometheus Operator objects belong in monitoring/, and only they")
	}
	if len(core.Namespaces) != 1 || core.Namespaces[0].Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Error("the Namespace must carry pod-security.kubernetes.io/enforce: privileged")
	}
	checkServices(t, core, ds.Namespace)

	// Every manifest is in a kustomization, and the kustomizations name
	// only files that exist.
	listed := map[string]bool{}
	for _, k := range []string{"kubernetes/kustomization.yaml", "kubernetes/monitoring/kustomization.yaml"} {
		var kust struct {
			APIVersion string   `json:"apiVersion"`
			Kind       string   `json:"kind"`
			Resources  []string `json:"resources"`
		}
		if err := yaml.UnmarshalStrict(read(t, k), &kust); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		for _, r := range kust.Resources {
			p := filepath.Join(filepath.Dir(k), r)
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s names %s: %v", k, r, err)
			}
			listed[p] = true
		}
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	more, _ := filepath.Glob("kubernetes/*/*.yaml")
	for _, f := range append(files, more...) {
		if base := filepath.Base(f); base != "kustomization.yaml" && base != "values.yaml" && !listed[f] {
			t.Errorf("%s is in no kustomization", f)
		}
	}

	// The ConfigMap's file is accepted by the agent's own loader, with the
	// environment the DaemonSet gives it.
	c := loadConfig(t, core.configFile(t), agentEnv(t, &ds.Spec.Template.Spec.Containers[0], "10.1.2.3"))
	if c.Admin.Listen != "10.1.2.3:9873" || c.Agent.BPFFS != "/sys/fs/bpf" || c.Agent.StateFile != "/var/lib/regedge/state" || !c.Agent.SkLookup {
		t.Errorf("config %+v %+v", c.Admin, c.Agent)
	}
	if len(c.Tokens.PublicKeys) != 1 || c.Tokens.PublicKeys[0] != "/etc/regedge/keys/edge.pub" {
		t.Errorf("tokens.publicKeys %v", c.Tokens.PublicKeys)
	}
	raw := rawConfig(t, core.configFile(t))
	if dig(raw, "admin", "pprof") != false {
		t.Error("admin.pprof must be false")
	}
}

// checkServices: the node-local Service publishes the proxy, WebSocket and
// bus ports but never the admin listener; the fleet's headless Service is
// the name every agent's fleet.peers resolves.
func checkServices(t *testing.T, m *manifests, ns string) {
	t.Helper()
	svc := m.service("regedge")
	if svc == nil {
		t.Fatal("no regedge Service")
	}
	if svc.Spec.InternalTrafficPolicy == nil || *svc.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal {
		t.Error("the Service must be node-local (internalTrafficPolicy: Local)")
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == 9873 || p.Name == "admin" {
			t.Error("the node-local Service publishes the admin listener")
		}
		if p.TargetPort.Type != intstr.Int {
			t.Errorf("port %s: a named target port needs a declared container port, which the surge rollout forbids", p.Name)
		}
	}
	fleet := m.service("regedge-fleet")
	if fleet == nil || fleet.Spec.ClusterIP != corev1.ClusterIPNone || len(fleet.Spec.Ports) != 1 ||
		fleet.Spec.Ports[0].Port != 4875 || fleet.Spec.Ports[0].Protocol != corev1.ProtocolUDP {
		t.Fatalf("fleet Service %+v: want headless, 4875/UDP", fleet)
	}
	raw := rawConfig(t, m.configFile(t))
	peers, _ := dig(raw, "fleet", "peers").([]any)
	want := "dns:regedge-fleet." + ns + ".svc.cluster.local:4875"
	if len(peers) != 1 || peers[0] != want {
		t.Errorf("fleet.peers %v, want [%s]", peers, want)
	}
}

// agentEnv is the agent container's environment as the kubelet would give
// it: the node's address for status.hostIP, $(VAR) expanded.
func agentEnv(t *testing.T, ct *corev1.Container, nodeIP string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range ct.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP":
			env[e.Name] = nodeIP
		case e.ValueFrom != nil:
			t.Fatalf("env %s: unexpected source %+v", e.Name, e.ValueFrom)
		default:
			env[e.Name] = regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(e.Value, func(ref string) string {
				return env[ref[2:len(ref)-1]]
			})
		}
	}
	return env
}

func TestComposeEnvironmentLoads(t *testing.T) {
	b, err := os.ReadFile("compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
			NetworkMode string            `json:"network_mode"`
			CapAdd      []string          `json:"cap_add"`
			Volumes     []any             `json:"volumes"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	svc, ok := compose.Services["regedge"]
	if !ok {
		t.Fatal("no regedge service")
	}
	if _, ok := compose.Services["upstream"]; !ok {
		t.Fatal("no fixture upstream service")
	}
	env := func(k string) (string, bool) { v, ok := svc.Environment[k]; return v, ok }
	c, err := config.Load("", env)
	if err != nil {
		t.Fatalf("the compose environment: %v", err)
	}
	if len(c.Proxy.Upstreams) < 2 || c.State().RegistryHash != 0xa1b2c3d4 || c.Agent.Interfaces[0] != "eth0" {
		t.Errorf("loaded %+v %+v", c.Proxy.Upstreams, c.Agent)
	}
	if svc.NetworkMode != "host" || strings.Join(svc.CapAdd, ",") != "BPF,NET_ADMIN,PERFMON" {
		t.Errorf("network %q caps %v", svc.NetworkMode, svc.CapAdd)
	}
	// The host is prepared by the chart's own init script.
	if _, err := os.Stat("helm/regedge/files/prepare-host.sh"); err != nil || compose.Services["prepare-host"].Volumes == nil ||
		!strings.Contains(string(b), "../helm/regedge/files/prepare-host.sh:/prepare-host.sh:ro") {
		t.Errorf("no prepare-host service running the chart's script: %v", err)
	}
}

func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	unit, _ := os.ReadFile("systemd/regedge.service")
	// systemd-analyze checks that ExecStart exists: point it at a real binary.
	bin := filepath.Join(t.TempDir(), "regedge")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/agent").CombinedOutput(); err != nil {
		t.Fatalf("build: %v %s", err, out)
	}
	path := filepath.Join(t.TempDir(), "regedge.service")
	os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/regedge"), []byte(bin)), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestVagrantfileSyntax(t *testing.T) {
	ruby, err := exec.LookPath("ruby")
	if err != nil {
		testutil.SkipOrFail(t, "ruby is not installed (.ci/run installs it)")
	}
	if out, err := exec.Command(ruby, "-c", "../Vagrantfile").CombinedOutput(); err != nil || !strings.Contains(string(out), "Syntax OK") {
		t.Fatalf("ruby -c Vagrantfile: %v %s", err, out)
	}
}

func TestDockerfileBuildsWithTheREADMEsTarget(t *testing.T) {
	df, _ := os.ReadFile("../Dockerfile")
	readme, _ := os.ReadFile("../README.md")
	if !regexp.MustCompile(`(?m)^RUN make build\b`).Match(df) {
		t.Error("the Dockerfile's build stage does not run make build")
	}
	if !strings.Contains(string(readme), "make build") {
		t.Error("the README does not build with make build")
	}
	if !regexp.MustCompile(`(?m)^FROM golang:\d+\.\d+\.\d+`).Match(df) {
		t.Error("the Go builder image is not pinned to a patch version")
	}
	// Not root: the binary carries exactly the three file capabilities.
	if !regexp.MustCompile(`(?m)^USER 65532:65532$`).Match(df) || regexp.MustCompile(`(?m)^USER 0`).Match(df) {
		t.Error("the image must run as the non-root user 65532")
	}
	if !regexp.MustCompile(`setcap cap_bpf,cap_net_admin,cap_perfmon=ep bin/regedge`).Match(df) {
		t.Error("the binary must carry cap_bpf, cap_net_admin and cap_perfmon as file capabilities")
	}
	mk, _ := os.ReadFile("../Makefile")
	if !strings.Contains(string(mk), "CGO_ENABLED=0 $(GO) build") {
		t.Error("make build must produce a static binary (CGO off)")
	}
}

// dashboard is the part of the Grafana dashboard the tests read.
type dashboard struct {
	Panels []struct {
		ID          int    `json:"id"`
		Type        string `json:"type"`
		Title       string `json:"title"`
		Description string `json:"description"`
		Options     struct {
			Content string `json:"content"`
		} `json:"options"`
		FieldConfig struct {
			Defaults struct {
				NoValue string `json:"noValue"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) *dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(read(t, "grafana/regedge.json"), &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// dashboardExprs returns every query of the dashboard.
func (d *dashboard) exprs() []string {
	var out []string
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			out = append(out, q.Expr)
		}
	}
	return out
}

// ruleExprs returns every alert expression of the committed PrometheusRule
// (the chart's, TestPlainManifestsAreTheChartsOutput).
func ruleExprs(t *testing.T) map[string]string {
	t.Helper()
	m := decodeManifests(t, "monitoring.yaml", read(t, "kubernetes/monitoring/monitoring.yaml"))
	out := map[string]string{}
	for _, r := range m.Rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				out[rule.Alert] = rule.Expr.String()
			}
		}
	}
	return out
}

// TestGrafanaDashboardCoversTheFleet: panels for what issue 17 found missing
// (cache, breaker, upstreams, hand-ons, build, config divergence, a count of
// degraded nodes) and a sign on the kernel panels for userspace-mode nodes.
func TestGrafanaDashboardCoversTheFleet(t *testing.T) {
	d := readDashboard(t)
	all := strings.Join(d.exprs(), "\n")
	for _, want := range []string{
		"regedge_cache_hits_total", "regedge_cache_misses_total", "regedge_cache_bytes", "regedge_cache_corrupt_total",
		"regedge_upstream_breaker_open", "regedge_upstream_up", "regedge_proxy_handed_on_total", "regedge_build_info",
		"count(count by (dump) (regedge_config_state_info", `count(regedge_bpf_mode{mode="userspace"`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel queries %s", want)
		}
	}
	ids := map[int]bool{}
	var note bool
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "text" && strings.Contains(p.Options.Content, "userspace mode") {
			note = true
		}
		for _, q := range p.Targets {
			if strings.Contains(q.Expr, "regedge_kernel_") || strings.Contains(q.Expr, "regedge_registry_") {
				if !strings.Contains(p.FieldConfig.Defaults.NoValue, "userspace mode") {
					t.Errorf("kernel panel %q: empty in userspace mode without saying why (fieldConfig.defaults.noValue)", p.Title)
				}
			}
		}
	}
	if !note {
		t.Error("no note panel on kernel panels that are empty in userspace mode")
	}
}

// pendingMetrics are names the dashboard and the alerting rules use that
// the agent does not export yet. An entry is allowed to be missing from a
// live agent's /metrics; one that is exported is logged, to be removed, and
// one that nothing uses is an error, so the list stays tight. Empty since
// the agent half of issue 17 exports every name the deploy half uses.
var pendingMetrics = map[string]bool{}

// TestDashboardAndRulesNameExportedMetrics scrapes a running agent (kernel
// metrics need the datapath: run as root) and checks that every metric a
// dashboard query or an alerting rule names is exported.
func TestDashboardAndRulesNameExportedMetrics(t *testing.T) {
	h := testutil.NewHosts(t)
	wanted := map[string][]string{}
	metricRe := regexp.MustCompile(`regedge_[a-z_]+`)
	for _, e := range readDashboard(t).exprs() {
		for _, m := range metricRe.FindAllString(e, -1) {
			if !slices.Contains(wanted[m], "the dashboard") {
				wanted[m] = append(wanted[m], "the dashboard")
			}
		}
	}
	rules := ruleExprs(t)
	if len(rules) < 9 {
		t.Fatalf("only %d alerting rules", len(rules))
	}
	for name, e := range rules {
		for _, m := range metricRe.FindAllString(e, -1) {
			wanted[m] = append(wanted[m], "rule "+name)
		}
	}
	if len(wanted) < 20 {
		t.Fatalf("only %d metrics in the dashboard and rules", len(wanted))
	}
	for m := range pendingMetrics {
		if wanted[m] == nil {
			t.Errorf("pendingMetrics lists %s, which no query uses", m)
		}
	}

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") }))
	defer upstream.Close()
	keyFile, pubFile, err := token.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := token.ReadPrivateKey(keyFile)
	tok, _ := token.Issue(key, "", token.Claims{RegistryHash: "0xa1b2c3d4",
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}})
	bpffs := t.TempDir()
	cfg := config.Default()
	cfg.Agent.Interfaces = []string{h.IfB}
	cfg.Agent.BPFFS = bpffs
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Tokens.PublicKeys = []string{pubFile}
	cfg.Proxy.RateLimit.PerMinute = 1 // the second request is limited: rate_limited_total appears
	cfg.Proxy.Cache.Dir = t.TempDir() // the cache's metrics appear
	cfg.Proxy.Upstreams = []config.Upstream{{Host: "127.0.0.1", Port: upstream.Listener.Addr().(*net.TCPAddr).Port, Hash: 0xa1b2c3d4}}
	var a *agent.Agent
	testutil.In(t, h.B, func() {
		if a, err = agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Fatal(err)
		}
		if err := a.Listen(); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { exec.Command("umount", "-l", bpffs).Run() })
	if a.BPFMode() != "kernel" {
		testutil.SkipOrFail(t, "kernel datapath not attached: "+a.BPFReason())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	// Traffic over the veth from A, so every labelled series appears: TC
	// tags and counts the flows, the proxy counts requests, tokens and a 429.
	for i := 0; i < 2; i++ {
		testutil.In(t, h.A, func() {
			c, err := net.DialTimeout("tcp", "192.0.2.2:4873", 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", tok)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.ReadAll(c)
		})
	}
	var body []byte
	testutil.In(t, h.B, func() {
		c, err := net.Dial("tcp", a.AdminAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
		// Read as HTTP: the body is chunked, and a chunk boundary inside
		// a "# TYPE" line would hide that family from the regexp.
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
	})
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (regedge_[a-z_]+) (\w+)`).FindAllStringSubmatch(string(body), -1) {
		exported[m[1]] = true
		if m[2] == "histogram" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				exported[m[1]+s] = true
			}
		}
	}
	for m, users := range wanted {
		switch {
		case exported[m] && pendingMetrics[m]:
			t.Logf("%s is exported now: remove it from pendingMetrics", m)
		case !exported[m] && !pendingMetrics[m]:
			t.Errorf("%s queries %s, which the agent does not export", strings.Join(users, ", "), m)
		}
	}
}
