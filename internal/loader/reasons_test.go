package loader

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/regedge/regedge/internal/vectors"
)

// TestReasonEnumMatchesC parses enum regedge_reason in bpf/include/reason.h
// and requires it to equal the Go constants, name for name and value for value.
func TestReasonEnumMatchesC(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(vectors.Dir(), "..", "bpf", "include", "reason.h"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`REASON_([A-Z]+)\s*=\s*(\d+)`)
	matches := re.FindAllStringSubmatch(string(src), -1)
	if len(matches) != NumReasons+1 {
		t.Fatalf("reason.h has %d enumerators, want %d reasons and REASON_MAX", len(matches), NumReasons)
	}
	for _, m := range matches {
		v, _ := strconv.Atoi(m[2])
		if m[1] == "MAX" {
			if v != NumReasons {
				t.Errorf("REASON_MAX = %d, Go NumReasons = %d", v, NumReasons)
			}
			continue
		}
		want := map[string]string{"OK": "ok"}[m[1]]
		if want == "" {
			want = lower(m[1])
		}
		if got := Reason(v).String(); got != want {
			t.Errorf("REASON_%s = %d, but Go Reason(%d) is %q", m[1], v, v, got)
		}
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
