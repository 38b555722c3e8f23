//go:build linux

package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The fallback for kernels without TCX (before 6.6): clsact with a cls_bpf
// direct-action filter, attached through netlink. It cannot be pinned and
// stays until removeFallbacks (regedge bpf detach) or the interface goes
// away. XDP needs no such fallback: the program uses bpf_xdp_load_bytes
// (5.18), and XDP links exist since 5.9.

const filterName = "regedge"

func clsactAttach(idx int, ingress bool, prog *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	parent := uint32(netlink.HANDLE_MIN_EGRESS)
	if ingress {
		parent = netlink.HANDLE_MIN_INGRESS
	}
	filter := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: idx, Parent: parent, Handle: 1, Protocol: unix.ETH_P_ALL, Priority: 1},
		Fd:           prog.FD(),
		Name:         filterName,
		DirectAction: true,
	}
	if err := netlink.FilterReplace(filter); err != nil {
		return fmt.Errorf("add bpf filter: %w", err)
	}
	return nil
}

// removeFallbacks removes regedge's clsact filters from an interface.
func removeFallbacks(idx int) error {
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return err
	}
	var errs []error
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlink.FilterList(l, parent)
		if err != nil {
			continue
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == filterName {
				errs = append(errs, netlink.FilterDel(f))
			}
		}
	}
	return errors.Join(errs...)
}
