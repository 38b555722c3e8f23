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

// bunBinary returns a Bun binary: the one on PATH, else one installed once
// into a cache directory shared by test runs.
func bunBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("bun"); err == nil {
		return p
	}
	return installedWithNpm(t, "@oven/bun-linux-x64@"+bunVersion, "node_modules/@oven/bun-linux-x64/bin/bun")
}

// installedWithNpm installs the npm package spec (name@version) once into
// a directory of its own under the temp directory, shared by test runs, and
// returns the path of rel inside it. Without npm, or when the install
// fails, the test skips (fails in CI).
func installedWithNpm(t *testing.T, spec, rel string) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm); it installs "+spec)
	}
	dir := filepath.Join(os.TempDir(), "regedge-npm-"+filepath.Base(spec))
	file := filepath.Join(dir, filepath.FromSlash(rel))
	if _, err := os.Stat(file); err == nil {
		return file
	}
	os.MkdirAll(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--loglevel=warn", "--prefix", dir, spec)
	if out, err := cmd.CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("installing %s from the npm registry failed: %v\n%s", spec, err, out))
	}
	return file
}
