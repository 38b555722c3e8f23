package deploy_test

// The alerting rules and the dashboard's queries through promtool: every
// expression parses, the annotation templates expand, and the alerts fire
// on the series they are about and on nothing else (testdata/alerts_test.yaml).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func promtool(t *testing.T) string {
	return tool(t, "REGEDGE_PROMTOOL", "promtool")
}

// ruleGroups returns the committed PrometheusRule's groups as a Prometheus
// rule file; without annotations when bare (promtool's unit tests compare
// annotations too, and their wording is not what they test).
func ruleGroups(t *testing.T, bare bool) []byte {
	t.Helper()
	m := decodeManifests(t, "monitoring.yaml", read(t, "kubernetes/monitoring/monitoring.yaml"))
	if len(m.Rules) != 1 {
		t.Fatalf("%d PrometheusRules", len(m.Rules))
	}
	spec := m.Rules[0].Spec.DeepCopy()
	if bare {
		for g := range spec.Groups {
			for r := range spec.Groups[g].Rules {
				spec.Groups[g].Rules[r].Annotations = nil
			}
		}
	}
	b, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestAlertingRulesCheckAndFire(t *testing.T) {
	dir := t.TempDir()
	full, bare := filepath.Join(dir, "rules.yaml"), filepath.Join(dir, "bare.yaml")
	if err := os.WriteFile(full, ruleGroups(t, false), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bare, ruleGroups(t, true), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", full)

	// Every alert of the rules has a test case.
	tests := string(read(t, "testdata/alerts_test.yaml"))
	for name := range ruleExprs(t) {
		if !strings.Contains(tests, "alertname: "+name+"\n") && !strings.Contains(tests, "alertname: "+name+",") {
			t.Errorf("alert %s has no case in testdata/alerts_test.yaml", name)
		}
	}
	unit := filepath.Join(dir, "alerts_test.yaml")
	if err := os.WriteFile(unit, []byte("rule_files: ["+bare+"]\n"+tests), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "test", "rules", unit)
}

// TestDashboardQueriesParse turns every dashboard query into a recording
// rule and has promtool check them: a query Prometheus cannot parse fails
// here rather than as an empty panel.
func TestDashboardQueriesParse(t *testing.T) {
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range readDashboard(t).exprs() {
		fmt.Fprintf(&b, "      - record: regedge:dashboard:query_%d\n        expr: %q\n", i, e)
	}
	path := filepath.Join(t.TempDir(), "dashboard.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", path)
}
