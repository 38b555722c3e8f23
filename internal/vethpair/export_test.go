//go:build linux

package vethpair

import (
	"fmt"
	"os"
)

// NextNames are the namespace names the next Create will use, for a test
// that makes one of them collide. If Create's naming changes, that test's
// collision no longer happens and it fails: it cannot pass by accident.
func NextNames() (a, b string) {
	n := seq.Load() + 1
	return fmt.Sprintf("regedge-%d-a-%d", os.Getpid(), n), fmt.Sprintf("regedge-%d-b-%d", os.Getpid(), n)
}
