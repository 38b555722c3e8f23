//go:build !linux

package loader

import (
	"errors"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// ErrNeedsLinux is what every kernel-facing call returns off Linux: bpffs,
// XDP, TC and sk_lookup exist only there. The agent then runs every check in
// userspace, as it does on a Linux host without BPF privileges.
var ErrNeedsLinux = errors.New("loader: the kernel datapath needs Linux")

// IsBPFFS has no bpffs to find off Linux.
func IsBPFFS(string) (bool, error) { return false, ErrNeedsLinux }

// EnsureBPFFS cannot mount bpffs off Linux; Open fails here first.
func EnsureBPFFS(string) (bool, error) { return false, ErrNeedsLinux }

func bootTime() (time.Duration, error) { return 0, ErrNeedsLinux }

func netlinkXDP(int, *ebpf.Program, bool) error { return ErrNeedsLinux }

func clsactAttach(int, bool, *ebpf.Program) error { return ErrNeedsLinux }

func removeFallbacks(int) error { return ErrNeedsLinux }

// RegisterSocket has no SOCKMAP to put the socket in off Linux.
func (o *Objects) RegisterSocket(Service, syscall.Conn) error { return ErrNeedsLinux }

// RegisterProxySocket has no SOCKMAP to put the socket in off Linux.
func (o *Objects) RegisterProxySocket(syscall.Conn) error { return ErrNeedsLinux }

// Registered has no SOCKMAP to look in off Linux.
func (o *Objects) Registered(Service, syscall.Conn) (bool, error) { return false, ErrNeedsLinux }

// lacksPerfmon: there are no Linux capabilities to read off Linux.
func lacksPerfmon() bool { return false }

// localWatch has no netlink to watch off Linux.
type localWatch struct{}

func (*localWatch) close() {}

func (d *Datapath) watchLocal() error { return ErrNeedsLinux }

// LocalWatchErr: nothing is watched off Linux.
func (d *Datapath) LocalWatchErr() error { return ErrNeedsLinux }
