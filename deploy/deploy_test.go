// Tests of the deploy files: what can be checked without a container engine
// or a cluster. Manifests decode strictly into their API types, the agent's
// own config loader accepts the ConfigMap and the compose environment, the
// systemd unit passes systemd-analyze, the Vagrantfile passes ruby -c, the
// Dockerfile builds with the README's make target, and the Grafana
// dashboard queries only metrics a running agent exports.
package deploy_test

import (
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
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

// docs splits a multi-document YAML file.
func docs(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(d) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// strict decodes YAML into v; unknown fields are errors.
func strict(t *testing.T, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%T: %v", v, err)
	}
}

func kindOf(t *testing.T, doc []byte) string {
	var meta struct{ Kind string }
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		t.Fatal(err)
	}
	return meta.Kind
}

func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	seen := map[string]int{}
	var ds *appsv1.DaemonSet
	var cm *corev1.ConfigMap
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		for _, d := range docs(t, f) {
			kind := kindOf(t, d)
			seen[kind]++
			switch kind {
			case "DaemonSet":
				ds = &appsv1.DaemonSet{}
				strict(t, d, ds)
			case "ConfigMap":
				cm = &corev1.ConfigMap{}
				strict(t, d, cm)
			case "Secret":
				strict(t, d, &corev1.Secret{})
			case "Service":
				var s corev1.Service
				strict(t, d, &s)
				if s.Spec.InternalTrafficPolicy == nil || *s.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal {
					t.Error("the Service must be node-local (internalTrafficPolicy: Local)")
				}
			case "Namespace":
				strict(t, d, &corev1.Namespace{})
			case "ServiceAccount":
				strict(t, d, &corev1.ServiceAccount{})
			case "ServiceMonitor":
				var sm struct {
					APIVersion string         `json:"apiVersion"`
					Kind       string         `json:"kind"`
					Metadata   map[string]any `json:"metadata"`
					Spec       struct {
						Selector  map[string]any `json:"selector"`
						Endpoints []struct {
							Port, Path, Interval string
						} `json:"endpoints"`
					} `json:"spec"`
				}
				strict(t, d, &sm)
				if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Port != "admin" {
					t.Errorf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
				}
			case "Kustomization":
				var k struct {
					APIVersion string   `json:"apiVersion"`
					Kind       string   `json:"kind"`
					Namespace  string   `json:"namespace"`
					Resources  []string `json:"resources"`
				}
				strict(t, d, &k)
				for _, r := range k.Resources {
					if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
						t.Errorf("kustomization names %s: %v", r, err)
					}
				}
				if len(k.Resources) != len(files)-1 {
					t.Errorf("kustomization lists %d resources, the directory has %d", len(k.Resources), len(files)-1)
				}
			default:
				t.Errorf("%s: unexpected kind %q", f, kind)
			}
		}
	}
	for _, k := range []string{"DaemonSet", "ConfigMap", "Secret", "Service", "ServiceMonitor", "Kustomization"} {
		if seen[k] == 0 {
			t.Errorf("no %s", k)
		}
	}
	if ds == nil || cm == nil {
		t.FailNow()
	}
	checkDaemonSet(t, ds)
	// The ConfigMap's file is accepted by the agent's own loader.
	path := filepath.Join(t.TempDir(), "regedge.json")
	os.WriteFile(path, []byte(cm.Data["regedge.json"]), 0o600)
	c, err := config.Load(path, noEnv)
	if err != nil {
		t.Fatalf("the ConfigMap's config: %v", err)
	}
	if c.Admin.Listen != "0.0.0.0:9873" || c.Agent.BPFFS != "/sys/fs/bpf" || c.Agent.StateFile == "" || !c.Agent.SkLookup {
		t.Errorf("config %+v %+v", c.Admin, c.Agent)
	}
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet) {
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Error("hostNetwork with ClusterFirstWithHostNet")
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Error("a surge rollout: maxSurge 1, maxUnavailable 0")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	ct := spec.Containers[0]
	if len(ct.Ports) != 0 {
		// hostNetwork makes them hostPorts: the surge pod would never schedule.
		t.Errorf("container ports %v: with hostNetwork they block the surge pod", ct.Ports)
	}
	sc := ct.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("not privileged, read-only root, no privilege escalation")
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	sort.Strings(add)
	if strings.Join(add, ",") != "BPF,NET_ADMIN,PERFMON" || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("capabilities: add %v drop %v; want exactly BPF, NET_ADMIN, PERFMON after dropping ALL", add, sc.Capabilities.Drop)
	}
	if ct.LivenessProbe == nil || ct.LivenessProbe.HTTPGet == nil || ct.LivenessProbe.HTTPGet.Path != "/health" ||
		ct.ReadinessProbe == nil || ct.ReadinessProbe.HTTPGet == nil || ct.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("liveness on /health, readiness on /readyz")
	}
	if ct.Resources.Requests.Memory().IsZero() || ct.Resources.Limits.Memory().IsZero() || ct.Resources.Limits.Cpu().IsZero() {
		t.Error("resource requests and limits")
	}
	var bpffs bool
	for _, m := range ct.VolumeMounts {
		if m.MountPath == "/sys/fs/bpf" {
			bpffs = m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer
		}
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/sys/fs/bpf" && !bpffs {
			t.Error("the host's bpffs must be mounted with HostToContainer propagation")
		}
	}
	if !bpffs {
		t.Error("no bpffs mount")
	}
}

func noEnv(string) (string, bool) { return "", false }

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
	mk, _ := os.ReadFile("../Makefile")
	if !strings.Contains(string(mk), "CGO_ENABLED=0 $(GO) build") {
		t.Error("make build must produce a static binary (CGO off)")
	}
}

// TestGrafanaQueriesNameExportedMetrics scrapes a running agent (kernel
// metrics need the datapath: run as root) and checks that every metric a
// dashboard query names is exported.
func TestGrafanaQueriesNameExportedMetrics(t *testing.T) {
	h := testutil.NewHosts(t)
	b, err := os.ReadFile("grafana/regedge.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	wanted := map[string]bool{}
	metricRe := regexp.MustCompile(`regedge_[a-z_]+`)
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			for _, m := range metricRe.FindAllString(q.Expr, -1) {
				wanted[m] = true
			}
		}
	}
	if len(wanted) < 10 {
		t.Fatalf("only %d metrics in the dashboard", len(wanted))
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
		body, _ = io.ReadAll(c)
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
	for m := range wanted {
		if !exported[m] {
			t.Errorf("the dashboard queries %s, which the agent does not export", m)
		}
	}
}
