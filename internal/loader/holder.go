package loader

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// ErrHeld means an interface (or the network namespace) already carries a
// regedge program that this agent's pins do not hold: another agent, with
// another agent.bpffs, attached it. Two agents judging the same packets
// would count them twice and fight over the settings, so Open refuses.
var ErrHeld = errors.New("held by another regedge agent")

// holderError names what holds an attachment point: the program, its link,
// and where that link is pinned when it is pinned under a regedge layout
// on any bpffs mount, so the operator can find the other agent.
func holderError(where string, progID ebpf.ProgramID) error {
	desc := fmt.Sprintf("program %d", progID)
	if p, err := ebpf.NewProgramFromID(progID); err == nil {
		if info, err := p.Info(); err == nil && info.Name != "" {
			desc = fmt.Sprintf("program %s (id %d)", info.Name, progID)
		}
		p.Close()
	}
	linkID, pin := findLink(progID)
	switch {
	case pin != "":
		desc += fmt.Sprintf(", link %d pinned at %s", linkID, pin)
	case linkID != 0:
		desc += fmt.Sprintf(", link %d (not pinned under any regedge layout)", linkID)
	}
	return fmt.Errorf("%w: %s already has %s: stop that agent or remove its pins (regedge bpf detach --bpffs ...), or give both agents the same agent.bpffs", ErrHeld, where, desc)
}

// findLink returns the link that attaches progID and its pin under
// MOUNT/regedge/*/links on a bpffs mount, when there is one.
func findLink(progID ebpf.ProgramID) (link.ID, string) {
	var id link.ID
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		if info, err := it.Link.Info(); err == nil && info.Program == progID {
			id = it.ID
			break
		}
	}
	if id == 0 {
		return 0, ""
	}
	for _, mnt := range bpffsMounts() {
		pins, _ := filepath.Glob(filepath.Join(mnt, "regedge", "*", "links", "*"))
		for _, pin := range pins {
			l, err := link.LoadPinnedLink(pin, nil)
			if err != nil {
				continue
			}
			info, err := l.Info()
			l.Close()
			if err == nil && info.ID == id {
				return id, pin
			}
		}
	}
	return id, ""
}

// bpffsMounts lists the bpffs mount points this process sees.
func bpffsMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && fields[i+1] == "bpf" && len(fields) > 4 {
				out = append(out, unescapeMount(fields[4]))
			}
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkTCXFree fails when the interface already has a regedge TC program at
// this hook: one another agent attached (this agent's own would have been
// found pinned and updated instead).
func checkTCXFree(ifname string, idx int, at ebpf.AttachType) error {
	res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: at})
	if err != nil {
		return nil // no TCX query here: the attach itself decides
	}
	for _, ap := range res.Programs {
		if isRegedgeProgram(ap.ID) {
			hook := "TC egress"
			if at == ebpf.AttachTCXIngress {
				hook = "TC ingress"
			}
			return holderError(fmt.Sprintf("%s of %s", hook, ifname), ap.ID)
		}
	}
	return nil
}

// xdpHolder explains a refused XDP attach when the interface already has a
// program: which one, and whose.
func xdpHolder(ifname string, idx int) error {
	l, err := netlink.LinkByIndex(idx)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return nil
	}
	return holderError("XDP of "+ifname, ebpf.ProgramID(l.Attrs().Xdp.ProgId))
}

// checkSkLookupFree fails when the network namespace already has a regedge
// sk_lookup program that this agent's pins do not hold.
func checkSkLookupFree(netnsFD int) error {
	res, err := link.QueryPrograms(link.QueryOptions{Target: netnsFD, Attach: ebpf.AttachSkLookup})
	if err != nil {
		return nil
	}
	for _, ap := range res.Programs {
		if isRegedgeProgram(ap.ID) {
			return holderError("sk_lookup of this network namespace", ap.ID)
		}
	}
	return nil
}

func isRegedgeProgram(id ebpf.ProgramID) bool {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false
	}
	defer p.Close()
	info, err := p.Info()
	return err == nil && strings.HasPrefix(info.Name, "regedge_")
}
