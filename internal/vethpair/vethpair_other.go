//go:build !linux

package vethpair

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netns"
)

// ErrNeedsLinux is what every call returns off Linux: network namespaces
// and veth pairs exist only there. Tests that need them skip before calling
// (testutil.RequireRoot), so this is only reached by a misuse.
var ErrNeedsLinux = errors.New("vethpair: network namespaces and veth pairs need Linux")

// Create fails off Linux.
func Create() (*Hosts, error) { return nil, ErrNeedsLinux }

// Close has nothing to remove off Linux.
func (h *Hosts) Close() error { return nil }

// In fails off Linux without running fn.
func In(netns.NsHandle, func()) error { return ErrNeedsLinux }

// CreateStar fails off Linux.
func CreateStar(int) (*Star, error) { return nil, ErrNeedsLinux }

// AddHubAddr fails off Linux.
func (st *Star) AddHubAddr(int, netip.Prefix) error { return ErrNeedsLinux }

// Close has nothing to remove off Linux.
func (st *Star) Close() error { return nil }
