package deploy_test

// The Helm chart: rendered with the pinned helm (CI installs it from the Go
// module proxy) over a table of values, every object decoded strictly and
// checked; bad values refused with a message; the plain manifests equal to
// the chart's output; and the init containers' scripts run for real under
// busybox, in a private mount namespace and in network namespaces.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/regedge/regedge/internal/testutil"
)

const chartDir = "helm/regedge"

// tool finds a test tool: $env, else name on PATH, else the Go bin
// directory (where go install puts helm). Missing, the test skips, or fails
// in CI, which installs it (.ci/run).
func tool(t *testing.T, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testutil.SkipOrFail(t, name+" not found (set "+env+"; .ci/run installs it)")
	return ""
}

func helm(t *testing.T) string {
	return tool(t, "REGEDGE_HELM", "helm")
}

// render runs helm template on the chart with args (values) and returns the
// output, or the error with helm's message.
func render(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helm(t), append([]string{"template", "regedge", chartDir, "--namespace", "edge", "--kube-version", "1.30.0"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &renderError{err, stderr.String()}
	}
	return out, nil
}

type renderError struct {
	err    error
	stderr string
}

func (e *renderError) Error() string { return e.err.Error() + ": " + e.stderr }

func mustRender(t *testing.T, args ...string) *manifests {
	t.Helper()
	out, err := render(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifests(t, strings.Join(args, " "), out)
}

func TestChartLints(t *testing.T) {
	for _, values := range [][]string{nil, {"-f", "kubernetes/values.yaml"}} {
		out, err := exec.Command(helm(t), append([]string{"lint", "--strict", chartDir}, values...)...).CombinedOutput()
		if err != nil {
			t.Errorf("helm lint --strict %v: %v\n%s", values, err, out)
		}
	}
}

// TestChartRendersAndDecodesStrictly renders the chart over a table of
// values; every object decodes strictly into its API type, every DaemonSet
// passes checkDaemonSet, and each case checks what its values change.
func TestChartRendersAndDecodesStrictly(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, m *manifests)
	}{
		{"defaults", nil, func(t *testing.T, m *manifests) {
			ds := m.daemonSet(t)
			spec := &ds.Spec.Template.Spec
			ct := &spec.Containers[0]
			if ct.Image != "ghcr.io/regedge/regedge:0.1.0" {
				t.Errorf("image %q: want the chart's appVersion", ct.Image)
			}
			if len(m.Namespaces) != 0 || len(m.ServiceMonitors)+len(m.Rules)+len(m.Quotas) != 0 {
				t.Error("by default: no Namespace (helm --create-namespace), no monitoring objects, no quota")
			}
			// Admin on the node's loopback: probes to 127.0.0.1, no env override.
			for _, p := range []*corev1.Probe{ct.StartupProbe, ct.ReadinessProbe, ct.LivenessProbe} {
				if p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 9873 {
					t.Errorf("probe %+v: want 127.0.0.1:9873", p.HTTPGet)
				}
			}
			// No interface configured: the default route's, found at start.
			if container(spec, "detect-interface") == nil || strings.Join(ct.Args, " ") != "run --config /run/regedge/regedge.json" {
				t.Errorf("args %v: want the detect-interface init container's config", ct.Args)
			}
			c := loadConfig(t, m.configFile(t), agentEnv(t, ct, "10.0.0.1"))
			if c.Admin.Listen != "127.0.0.1:9873" || len(c.Agent.Interfaces) != 0 || c.Agent.StateFile != "/var/lib/regedge/state" {
				t.Errorf("config admin %+v agent %+v", c.Admin, c.Agent)
			}
			raw := rawConfig(t, m.configFile(t))
			if dig(raw, "admin", "pprof") != false || dig(raw, "agent", "skLookup") != true {
				t.Error("admin.pprof false and agent.skLookup true by default")
			}
			checkServices(t, m, "edge")
		}},
		{"interfaces, digest, node address over IPv6, every secret", []string{
			"--set", "agent.interfaces={eth1,bond0}", "--set", "image.digest=" + digest, "--set", "image.tag=1.2.3",
			"--set", "admin.bind=nodeIP", "--set", "admin.nodeIPFamily=IPv6",
			"--set", "secrets.tokenKeys.existingSecret=tk", "--set", "secrets.tokenKeys.items={a.pub,b.pub}",
			"--set", "secrets.busKeys.existingSecret=bk", "--set", "secrets.busKeys.items={bus.pub}",
			"--set", "secrets.upstream.existingSecret=up", "--set", "secrets.tls.existingSecret=tls",
		}, func(t *testing.T, m *manifests) {
			ds := m.daemonSet(t)
			spec := &ds.Spec.Template.Spec
			ct := &spec.Containers[0]
			if ct.Image != "ghcr.io/regedge/regedge:1.2.3@"+digest {
				t.Errorf("image %q: want tag and digest", ct.Image)
			}
			if container(spec, "detect-interface") != nil || strings.Join(ct.Args, " ") != "run --config /etc/regedge/config/regedge.json" {
				t.Errorf("interfaces given: no detection, the ConfigMap's file (args %v)", ct.Args)
			}
			for _, p := range []*corev1.Probe{ct.StartupProbe, ct.ReadinessProbe, ct.LivenessProbe} {
				if p.HTTPGet.Host != "" {
					t.Errorf("probe host %q: on the node address the kubelet probes the pod (node) IP", p.HTTPGet.Host)
				}
			}
			c := loadConfig(t, m.configFile(t), agentEnv(t, ct, "fd00::7"))
			if c.Admin.Listen != "[fd00::7]:9873" {
				t.Errorf("admin.listen %q", c.Admin.Listen)
			}
			if strings.Join(c.Agent.Interfaces, ",") != "eth1,bond0" ||
				strings.Join(c.Tokens.PublicKeys, ",") != "/etc/regedge/keys/a.pub,/etc/regedge/keys/b.pub" ||
				strings.Join(c.Bus.PublicKeys, ",") != "/etc/regedge/bus-keys/bus.pub" ||
				c.Proxy.TLS.Cert != "/etc/regedge/tls/tls.crt" || c.Proxy.TLS.Key != "/etc/regedge/tls/tls.key" {
				t.Errorf("config %+v %+v %+v %+v", c.Agent.Interfaces, c.Tokens, c.Bus.PublicKeys, c.Proxy.TLS)
			}
			// Each key path the config names is where a Secret is mounted.
			mounts := map[string]string{}
			for _, vm := range ct.VolumeMounts {
				mounts[vm.MountPath] = vm.Name
			}
			secrets := map[string]string{}
			for _, v := range spec.Volumes {
				if v.Secret != nil {
					secrets[v.Name] = v.Secret.SecretName
				}
			}
			for dir, secret := range map[string]string{"/etc/regedge/keys": "tk", "/etc/regedge/bus-keys": "bk", "/etc/regedge/upstream": "up", "/etc/regedge/tls": "tls"} {
				if secrets[mounts[dir]] != secret {
					t.Errorf("%s: mounted from %q, want Secret %s", dir, secrets[mounts[dir]], secret)
				}
			}
		}},
		{"monitoring, namespace, quota", []string{
			"--set", "admin.bind=nodeIP", "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
			"--set", "namespace.create=true", "--set", "priorityClassQuota.create=true",
		}, func(t *testing.T, m *manifests) {
			if len(m.Namespaces) != 1 || m.Namespaces[0].Name != "edge" || m.Namespaces[0].Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
				t.Errorf("namespace %+v", m.Namespaces)
			}
			if len(m.ServiceMonitors) != 1 || len(m.Rules) != 1 || len(m.Quotas) != 1 {
				t.Fatalf("%d ServiceMonitors, %d PrometheusRules, %d quotas", len(m.ServiceMonitors), len(m.Rules), len(m.Quotas))
			}
			sm := m.ServiceMonitors[0]
			metrics := m.service("regedge-metrics")
			if metrics == nil || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" {
				t.Fatalf("ServiceMonitor %+v, metrics Service %v", sm.Spec, metrics)
			}
			for k, v := range sm.Spec.Selector.MatchLabels {
				if metrics.Labels[k] != v {
					t.Errorf("the ServiceMonitor selects %s=%s, the metrics Service has %q", k, v, metrics.Labels[k])
				}
			}
			if m.service("regedge").Labels["app.kubernetes.io/component"] == "metrics" {
				t.Error("the ServiceMonitor would scrape the node-local Service")
			}
			var scrape string
			for _, g := range m.Rules[0].Spec.Groups {
				for _, r := range g.Rules {
					if r.Alert == "RegedgeScrapeDown" {
						scrape = r.Expr.String()
					}
				}
			}
			if scrape != `up{job="regedge-metrics"} == 0` {
				t.Errorf("scrape-down %q: want the ServiceMonitor's job (its Service's name)", scrape)
			}
			q := m.Quotas[0].Spec.ScopeSelector
			if q == nil || len(q.MatchExpressions) != 1 || q.MatchExpressions[0].Values[0] != "system-node-critical" {
				t.Errorf("quota scope %+v", q)
			}
		}},
		{"kernel datapath off, no bpffs mount, no fleet", []string{
			"--set", "agent.bpf=off", "--set", "agent.mountBPFFS=false", "--set", "fleet.enabled=false",
		}, func(t *testing.T, m *manifests) {
			spec := &m.daemonSet(t).Spec.Template.Spec
			if len(spec.InitContainers) != 0 {
				t.Errorf("init containers %v: nothing to mount or detect", spec.InitContainers)
			}
			if m.service("regedge-fleet") != nil || dig(rawConfig(t, m.configFile(t)), "fleet") != nil {
				t.Error("fleet off: no headless Service, no fleet section")
			}
			if c := loadConfig(t, m.configFile(t), nil); c.Agent.BPF != "off" {
				t.Errorf("agent.bpf %q", c.Agent.BPF)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustRender(t, tc.args...)
			checkDaemonSet(t, m.daemonSet(t))
			if len(m.ConfigMaps) != 1 || len(m.ServiceAccounts) != 1 {
				t.Errorf("%d ConfigMaps, %d ServiceAccounts", len(m.ConfigMaps), len(m.ServiceAccounts))
			}
			tc.check(t, m)
		})
	}
}

// TestChartRefusesBadValues: values that would deploy something broken or
// unsafe stop helm with a message naming the value.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"image.tag=latest", "/image/tag"},
		{"image.digest=sha256:abc", "/image/digest"},
		{"agent.interface=eth0", "additional properties 'interface'"},
		{"agent.interfaces={eth0/1}", "/agent/interfaces/0"},
		{"runAsUser=0", "/runAsUser"},
		{"config.agent.bpf=off", "config.agent is set by the chart"},
		{"config.admin.listen=0.0.0.0:9873", "config.admin is set by the chart"},
		{"serviceMonitor.enabled=true", "serviceMonitor.enabled needs admin.bind=nodeIP"},
		{"secrets.tokenKeys.existingSecret=keys", "secrets.tokenKeys.items"},
		{"admin.bind=0.0.0.0", "/admin/bind"},
	} {
		_, err := render(t, "--set", tc.set)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: %v, want an error naming %q", tc.set, err, tc.want)
		}
	}
}

// TestChartConfigEditRollsTheDaemonSet: the pod template carries the
// ConfigMap's checksum, so an edit of the config changes the template (and
// rolls the pods) while an unrelated value does not.
func TestChartConfigEditRollsTheDaemonSet(t *testing.T) {
	sum := func(args ...string) string {
		return mustRender(t, args...).daemonSet(t).Spec.Template.Annotations["checksum/config"]
	}
	base := sum()
	if edited := sum("--set", "config.proxy.timeout=5000"); edited == base {
		t.Error("a config edit left the checksum as it was")
	}
	if other := sum("--set", "resources.limits.memory=512Mi"); other != base {
		t.Error("a resources edit changed the config checksum")
	}
}

// TestPlainManifestsAreTheChartsOutput runs the same render.sh as `make
// manifests` into a temporary directory and compares with what is committed.
func TestPlainManifestsAreTheChartsOutput(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command("sh", "kubernetes/render.sh", out)
	cmd.Env = append(os.Environ(), "HELM="+helm(t))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render.sh: %v\n%s", err, b)
	}
	for _, f := range []string{"regedge.yaml", "monitoring/monitoring.yaml"} {
		want := read(t, filepath.Join(out, f))
		if got := read(t, filepath.Join("kubernetes", f)); !bytes.Equal(got, want) {
			t.Errorf("deploy/kubernetes/%s is not what the chart renders: run make manifests", f)
		}
	}
}

// plainDaemonSet is the committed DaemonSet (the chart with
// kubernetes/values.yaml, where no interface is configured).
func plainDaemonSet(t *testing.T) (*manifests, *corev1.PodSpec) {
	t.Helper()
	m := decodeManifests(t, "regedge.yaml", read(t, "kubernetes/regedge.yaml"))
	return m, &m.daemonSet(t).Spec.Template.Spec
}

// initScript returns the script an init container runs (sh -c SCRIPT) and
// its environment.
func initScript(t *testing.T, spec *corev1.PodSpec, name string) (string, []string) {
	t.Helper()
	c := container(spec, name)
	if c == nil || len(c.Command) != 3 || c.Command[0] != "sh" || c.Command[1] != "-c" {
		t.Fatalf("init container %s: want sh -c SCRIPT, got %+v", name, c)
	}
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	return c.Command[2], env
}

func busybox(t *testing.T) string {
	return tool(t, "REGEDGE_BUSYBOX", "busybox")
}

// TestPrepareHostMountsBPFFSAndHandsItOver runs prepare-host's script under
// busybox, as root, in a private mount namespace (nothing reaches the
// machine's mounts), on a directory standing for the node's /sys/fs/bpf:
// unmounted, it mounts a bpffs (once, however often it runs); mounted as
// systemd does (0700) with a root agent's pins, it hands them to the agent's
// user and opens the directory for search.
func TestPrepareHostMountsBPFFSAndHandsItOver(t *testing.T) {
	testutil.RequireRoot(t)
	bb := busybox(t)
	_, spec := plainDaemonSet(t)
	script, env := initScript(t, spec, "prepare-host")
	for _, want := range []string{"BPFFS=/sys/fs/bpf", "STATE_DIR=/var/lib/regedge", "AGENT_UID=65532", "AGENT_GID=65532"} {
		if !strings.Contains(strings.Join(env, " "), want) {
			t.Errorf("prepare-host env %v lacks %s", env, want)
		}
	}
	dir := t.TempDir()
	scriptFile := filepath.Join(dir, "prepare-host.sh")
	if err := os.WriteFile(scriptFile, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name, before string
		want         []string
	}{
		{"not mounted", "", []string{"cafe4a11", "mounts 1", "regedge 65532:65532 700", "state 65532:65532 700"}},
		{"mounted 0700 with a root agent's pins",
			`mount -t bpf -o mode=0700 bpf "$BPFFS" && mkdir -p "$BPFFS/regedge/v1/maps"`,
			[]string{"cafe4a11", "mounts 1", "regedge 65532:65532 700", "maps 65532:65532", "search o+x", "state 65532:65532 700"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// mountinfo escapes spaces: plain names.
			bpffs, state := filepath.Join(dir, fmt.Sprint(i), "bpf"), filepath.Join(dir, fmt.Sprint(i), "state")
			if err := os.MkdirAll(bpffs, 0o755); err != nil {
				t.Fatal(err)
			}
			driver := `set -eu
` + tc.before + `
"$BB" sh "$SCRIPT"
"$BB" sh "$SCRIPT"
stat -f -c %t "$BPFFS"
echo "mounts $(awk -v p="$BPFFS" '$5 == p' /proc/self/mountinfo | wc -l)"
echo "regedge $(stat -c '%u:%g %a' "$BPFFS/regedge")"
if [ -d "$BPFFS/regedge/v1/maps" ]; then echo "maps $(stat -c '%u:%g' "$BPFFS/regedge/v1/maps")"; fi
if [ "$(stat -c %A "$BPFFS" | cut -c10)" = t ] || [ "$(stat -c %A "$BPFFS" | cut -c10)" = x ]; then echo "search o+x"; fi
echo "state $(stat -c '%u:%g %a' "$STATE_DIR")"
`
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", driver)
			cmd.Env = append(os.Environ(), append(env, "BB="+bb, "SCRIPT="+scriptFile, "BPFFS="+bpffs, "STATE_DIR="+state)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w+"\n") {
					t.Errorf("want %q in\n%s", w, out)
				}
			}
		})
	}
}

// TestDetectInterfaceFindsTheDefaultRoute runs detect-interface's script
// under busybox in network namespaces the test makes: no default route is
// refused with the reason and writes nothing; an IPv4 default route names
// its interface (lowest metric first), an IPv6-only one too; the config it
// writes is the ConfigMap's with that interface, and the agent's loader
// takes it.
func TestDetectInterfaceFindsTheDefaultRoute(t *testing.T) {
	h := testutil.NewHosts(t)
	bb := busybox(t)
	m, spec := plainDaemonSet(t)
	script, _ := initScript(t, spec, "detect-interface")
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	if err := os.WriteFile(in, []byte(m.configFile(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	detect := func(ns string) (string, []byte, error) {
		out := filepath.Join(dir, ns+".json")
		_ = os.Remove(out) // a file left by an earlier case would pass for this one's
		cmd := exec.Command("ip", "netns", "exec", ns, bb, "sh", "-c", script)
		cmd.Env = append(os.Environ(), "IN="+in, "OUT="+out)
		log, err := cmd.CombinedOutput()
		written, _ := os.ReadFile(out)
		return string(written), log, err
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}

	if written, log, err := detect(h.NameA); err == nil || written != "" || !strings.Contains(string(log), "no usable default-route interface") {
		t.Errorf("no default route: err %v, wrote %q, said %s", err, written, log)
	}

	ip("-n", h.NameB, "route", "add", "default", "via", h.A4.String(), "dev", h.IfB)
	// A second link in B (a veth pair of its own) with a worse default route.
	ip("-n", h.NameB, "link", "add", "rgsecond0", "type", "veth", "peer", "name", "rgsecond1")
	ip("-n", h.NameB, "link", "set", "rgsecond0", "up")
	ip("-n", h.NameB, "link", "set", "rgsecond1", "up")
	ip("-n", h.NameB, "route", "add", "default", "dev", "rgsecond0", "metric", "50")
	written, log, err := detect(h.NameB)
	if err != nil {
		t.Fatalf("%v %s", err, log)
	}
	if c := loadConfig(t, written, nil); strings.Join(c.Agent.Interfaces, ",") != h.IfB {
		t.Errorf("interfaces %v, want [%s] (metric 0 before 50)", c.Agent.Interfaces, h.IfB)
	}
	// Everything but agent.interfaces is the ConfigMap's, byte for byte.
	if strings.Replace(written, `"interfaces": ["`+h.IfB+`"]`, `"interfaces": []`, 1) != m.configFile(t) {
		t.Error("the written config differs from the ConfigMap's beyond agent.interfaces")
	}
	ip("-n", h.NameB, "route", "del", "default", "via", h.A4.String(), "dev", h.IfB)
	if written, log, err = detect(h.NameB); err != nil || loadConfig(t, written, nil).Agent.Interfaces[0] != "rgsecond0" {
		t.Errorf("after the first default route went: %v %s %s", err, log, written)
	}

	ip("-n", h.NameA, "-6", "route", "add", "default", "via", h.B6.String(), "dev", h.IfA)
	if written, log, err = detect(h.NameA); err != nil || loadConfig(t, written, nil).Agent.Interfaces[0] != h.IfA {
		t.Errorf("IPv6-only default route: %v %s %s", err, log, written)
	}

	// A config whose interfaces are already set is not guessed at.
	if err := os.WriteFile(in, []byte(strings.Replace(m.configFile(t), `"interfaces": []`, `"interfaces": ["eth9"]`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, log, err = detect(h.NameA); err == nil || !strings.Contains(string(log), `has 0 empty "interfaces" lists`) {
		t.Errorf("a config with interfaces: %v %s", err, log)
	}
}
