package userproxy

import (
	"testing"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
)

// registry is the fixture upstream npm registry (npmfixture): packuments
// whose tarball URLs point at itself, tarballs with real sha512 integrity,
// ETags, and a record of every request's path and headers.
type registry = npmfixture.Registry

// pkg is one package version for newRegistry.
type pkg struct {
	name, version string
	deps          map[string]string
	files         map[string]string
}

func newRegistry(t testing.TB, pkgs ...pkg) *registry {
	t.Helper()
	reg := npmfixture.New(t)
	for _, p := range pkgs {
		reg.Add(npmfixture.Package{Name: p.name, Version: p.version, Deps: p.deps, Files: p.files})
	}
	return reg
}
