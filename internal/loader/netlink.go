//go:build linux

package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Fallbacks for kernels without XDP bpf_link or TCX. They attach through
// netlink, cannot be pinned, and stay until removeFallbacks (regedge bpf
// detach) or the interface goes away.

const filterName = "regedge"

func netlinkXDP(idx int, prog *ebpf.Program, generic bool) error {
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return err
	}
	flags := unix.XDP_FLAGS_DRV_MODE
	if generic {
		flags = unix.XDP_FLAGS_SKB_MODE
	}
	return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), flags)
}

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

// removeFallbacks removes a netlink-attached regedge XDP program and
// regedge's clsact filters from an interface.
func removeFallbacks(idx int) error {
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return err
	}
	var errs []error
	if xdp := l.Attrs().Xdp; xdp != nil && xdp.Attached && xdp.ProgId != 0 {
		if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(xdp.ProgId)); err == nil {
			info, ierr := p.Info()
			p.Close()
			// Only when attached without a link: a link-attached program
			// is removed by unpinning its link.
			if ierr == nil && strings.HasPrefix(info.Name, "regedge") {
				if err := netlink.LinkSetXdpFd(l, -1); err != nil && !errors.Is(err, unix.EBUSY) {
					errs = append(errs, fmt.Errorf("remove XDP: %w", err))
				}
			}
		}
	}
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
