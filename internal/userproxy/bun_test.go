package userproxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/testutil"
)

// bunVersion is the Bun the test installs from the npm registry's
// @oven/bun-linux-x64 package, which ships the binary.
const bunVersion = "1.4.4"

// bunBinary returns a Bun binary, installing it once into a cache directory
// shared by test runs.
func bunBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("bun"); err == nil {
		return p
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "neither bun nor npm is installed (.ci/run installs nodejs and npm)")
	}
	dir := filepath.Join(os.TempDir(), "regedge-bun-"+bunVersion)
	bin := filepath.Join(dir, "node_modules", "@oven", "bun-linux-x64", "bin", "bun")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	os.MkdirAll(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--loglevel=warn", "--prefix", dir, "@oven/bun-linux-x64@"+bunVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("installing Bun from the npm registry failed: %v\n%s", err, out))
	}
	return bin
}
