package deploy_test

// Strict decoding of Kubernetes manifests (the committed plain manifests and
// the chart's output) into their API types, the properties every regedge
// DaemonSet must have, and the agent's own loader on the rendered config.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/regedge/regedge/internal/config"
)

// manifests holds the objects of one rendering, decoded strictly.
type manifests struct {
	Namespaces      []corev1.Namespace
	ServiceAccounts []corev1.ServiceAccount
	ConfigMaps      []corev1.ConfigMap
	Services        []corev1.Service
	DaemonSets      []appsv1.DaemonSet
	Quotas          []corev1.ResourceQuota
	ServiceMonitors []monitoringv1.ServiceMonitor
	Rules           []monitoringv1.PrometheusRule
}

// apiVersions is what each kind must say; anything else (a Secret above
// all: the chart never renders one) is an error.
var apiVersions = map[string]string{
	"Namespace": "v1", "ServiceAccount": "v1", "ConfigMap": "v1", "Service": "v1", "ResourceQuota": "v1",
	"DaemonSet":      "apps/v1",
	"ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1",
}

// decodeManifests splits a multi-document YAML stream and decodes each
// document strictly (unknown or duplicate fields are errors) into its type.
func decodeManifests(t *testing.T, name string, stream []byte) *manifests {
	t.Helper()
	m := &manifests{}
	for i, d := range splitDocs(stream) {
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(d, &meta); err != nil {
			t.Fatalf("%s: document %d: %v", name, i, err)
		}
		if want, ok := apiVersions[meta.Kind]; !ok {
			t.Fatalf("%s: document %d: unexpected kind %q", name, i, meta.Kind)
		} else if meta.APIVersion != want {
			t.Fatalf("%s: %s has apiVersion %q, want %q", name, meta.Kind, meta.APIVersion, want)
		}
		var err error
		switch meta.Kind {
		case "Namespace":
			err = strictAppend(d, &m.Namespaces)
		case "ServiceAccount":
			err = strictAppend(d, &m.ServiceAccounts)
		case "ConfigMap":
			err = strictAppend(d, &m.ConfigMaps)
		case "Service":
			err = strictAppend(d, &m.Services)
		case "DaemonSet":
			err = strictAppend(d, &m.DaemonSets)
		case "ResourceQuota":
			err = strictAppend(d, &m.Quotas)
		case "ServiceMonitor":
			err = strictAppend(d, &m.ServiceMonitors)
		case "PrometheusRule":
			err = strictAppend(d, &m.Rules)
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", name, meta.Kind, err)
		}
	}
	return m
}

func strictAppend[T any](doc []byte, list *[]T) error {
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// splitDocs splits a YAML stream on its "---" lines, dropping documents that
// hold only comments.
func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		var content bool
		for _, line := range strings.Split(string(d), "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				content = true
				break
			}
		}
		if content {
			out = append(out, d)
		}
	}
	return out
}

func (m *manifests) daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	if len(m.DaemonSets) != 1 {
		t.Fatalf("%d DaemonSets, want 1", len(m.DaemonSets))
	}
	return &m.DaemonSets[0]
}

func (m *manifests) service(name string) *corev1.Service {
	for i := range m.Services {
		if m.Services[i].Name == name {
			return &m.Services[i]
		}
	}
	return nil
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for _, list := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// checkDaemonSet checks what every regedge DaemonSet must do, whatever the
// values: the findings of issue 17 ("Deploy") and the surge rollout of
// issue 16.
func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := &ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Error("hostNetwork with ClusterFirstWithHostNet")
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		ru.MaxSurge == nil || *ru.MaxSurge != intstr.FromInt32(1) || ru.MaxUnavailable == nil || *ru.MaxUnavailable != intstr.FromInt32(0) {
		t.Errorf("rolling update %+v: want maxSurge 1, maxUnavailable 0", ru)
	}
	if ds.Spec.MinReadySeconds <= 0 {
		t.Error("minReadySeconds: a new pod must stay ready a while before the old one goes")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	for _, effect := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
		var ok bool
		for _, tol := range spec.Tolerations {
			ok = ok || (tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == effect)
		}
		if !ok {
			t.Errorf("no toleration of every %s taint", effect)
		}
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want non-root, a non-zero runAsUser, seccomp RuntimeDefault", psc)
	}
	if ds.Spec.Template.Annotations["checksum/config"] == "" || len(ds.Spec.Template.Annotations["checksum/config"]) != 64 {
		t.Error("no checksum/config annotation: a ConfigMap edit would roll nothing")
	}
	// With a surge pod beside the old one on the host network, a declared
	// port is a host port and the scheduler keeps the surge pod off the node.
	for _, c := range append(append([]corev1.Container(nil), spec.InitContainers...), spec.Containers...) {
		if len(c.Ports) != 0 {
			t.Errorf("container %s declares ports %v: host ports block the surge rollout", c.Name, c.Ports)
		}
	}

	if len(spec.Containers) != 1 || spec.Containers[0].Name != "regedge" {
		t.Fatalf("containers %v: want one, regedge", spec.Containers)
	}
	ct := &spec.Containers[0]
	if strings.HasSuffix(ct.Image, ":latest") || !strings.Contains(ct.Image[strings.LastIndex(ct.Image, "/")+1:], ":") {
		t.Errorf("image %q: want a version tag", ct.Image)
	}
	sc := ct.SecurityContext
	if sc == nil {
		t.Fatal("the agent has no securityContext")
	}
	uid := psc.RunAsUser
	if sc.RunAsUser != nil {
		uid = sc.RunAsUser
	}
	if uid == nil || *uid == 0 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("the agent must run as a non-root user")
	}
	if sc.Privileged == nil || *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the agent: not privileged, read-only root")
	}
	// A non-root user gets capabilities only from the binary's file
	// capabilities, which no_new_privs (allowPrivilegeEscalation: false)
	// would void; the bounding set below keeps exec from granting more.
	if sc.AllowPrivilegeEscalation == nil || !*sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be true for the file capabilities of a non-root agent")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("the agent: seccomp RuntimeDefault")
	}
	var add []string
	if sc.Capabilities != nil {
		for _, c := range sc.Capabilities.Add {
			add = append(add, string(c))
		}
	}
	sort.Strings(add)
	if sc.Capabilities == nil || strings.Join(add, ",") != "BPF,NET_ADMIN,PERFMON" || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("capabilities %+v: want exactly BPF, NET_ADMIN, PERFMON after dropping ALL", sc.Capabilities)
	}
	probes := []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"startup", ct.StartupProbe, "/livez"}, {"readiness", ct.ReadinessProbe, "/readyz"}, {"liveness", ct.LivenessProbe, "/livez"}}
	for _, p := range probes {
		if p.p == nil || p.p.HTTPGet == nil || p.p.HTTPGet.Path != p.path {
			t.Errorf("%s probe: want GET %s", p.name, p.path)
		}
	}
	if ct.Resources.Requests.Memory().IsZero() || ct.Resources.Limits.Memory().IsZero() || ct.Resources.Limits.Cpu().IsZero() {
		t.Error("resource requests and limits")
	}

	// bpffs: the node's, HostToContainer for the agent, mounted by a
	// privileged init container with Bidirectional propagation when asked.
	var bpffsVolume string
	for _, v := range spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path == "/sys/fs/bpf" {
			bpffsVolume = v.Name
		}
	}
	mountOf := func(c *corev1.Container, volume string) *corev1.VolumeMount {
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].Name == volume {
				return &c.VolumeMounts[i]
			}
		}
		return nil
	}
	if m := mountOf(ct, bpffsVolume); bpffsVolume == "" || m == nil || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Error("the agent must mount the node's /sys/fs/bpf with HostToContainer propagation")
	}
	for _, ic := range spec.InitContainers {
		privileged := ic.SecurityContext != nil && ic.SecurityContext.Privileged != nil && *ic.SecurityContext.Privileged
		if ic.Name != "prepare-host" && privileged {
			t.Errorf("init container %s is privileged", ic.Name)
		}
		if ic.Name == "prepare-host" {
			m := mountOf(&ic, bpffsVolume)
			if !privileged || m == nil || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
				t.Error("prepare-host must be privileged with the bpffs mounted Bidirectional (its mount must reach the node)")
			}
			if len(ic.Command) != 3 || !strings.Contains(ic.Command[2], "mount -t bpf bpf") {
				t.Errorf("prepare-host command %q does not mount bpffs", ic.Command)
			}
		}
	}
	// Secrets are referenced, never rendered; the agent reads every one.
	for _, v := range spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "" {
			t.Errorf("volume %s names no Secret", v.Name)
		}
	}
}

// loadConfig runs the agent's own loader (strict: unknown keys are errors)
// on a rendered config file, with env as the environment.
func loadConfig(t *testing.T, file string, env map[string]string) *config.Config {
	t.Helper()
	if !json.Valid([]byte(file)) {
		t.Fatalf("the rendered config is not JSON:\n%s", file)
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	path := filepath.Join(t.TempDir(), "regedge.json")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path, lookup)
	if err != nil {
		t.Fatalf("the agent refuses the rendered config: %v\n%s", err, file)
	}
	return c
}

// rawConfig returns the rendered config file as a generic document, to
// check what the chart writes (not only what the loader makes of it).
func rawConfig(t *testing.T, file string) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal([]byte(file), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func dig(doc map[string]any, p ...string) any {
	var v any = doc
	for _, k := range p {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func (m *manifests) configFile(t *testing.T) string {
	t.Helper()
	if len(m.ConfigMaps) != 1 {
		t.Fatalf("%d ConfigMaps, want 1", len(m.ConfigMaps))
	}
	f, ok := m.ConfigMaps[0].Data["regedge.json"]
	if !ok {
		t.Fatal("the ConfigMap has no regedge.json")
	}
	return f
}
