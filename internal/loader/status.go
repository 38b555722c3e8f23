package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Status is what `regedge bpf status` shows: read from the pins alone, so it
// works whether or not an agent is running.
type Status struct {
	Dir        string
	Links      []LinkStatus
	Maps       []MapStatus
	XDP        [NumReasons]uint64
	TC         [NumReasons]uint64
	Registries []RegistryCounter
	// Local is the node's address list the programs judge drops by
	// (docs/kernel.md); nil when config_map could not be read.
	Local *LocalList
}

// LinkStatus is one pinned attachment.
type LinkStatus struct {
	Name      string
	Type      string
	ProgramID uint32
	Program   string
	// Defunct, when set, says why the link attaches nothing any more (its
	// interface or network namespace was deleted): its pin is all that is
	// left, and the next agent start removes it.
	Defunct string
}

// MapStatus is one pinned map and the kernel memory it holds.
type MapStatus struct {
	Name       string
	Type       string
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	Memlock    uint64 // bytes, as bpftool map show reports
}

// ReadStatus reads the pins under bpffs. No pins is not an error: the
// returned Status is empty (Dir says where it looked).
func ReadStatus(bpffs string) (*Status, error) {
	st := &Status{Dir: filepath.Join(PinRoot(bpffs), LayoutVersion)}
	if ok, err := IsBPFFS(bpffsOr(bpffs)); err != nil || !ok {
		return st, err
	}
	links, err := os.ReadDir(filepath.Join(st.Dir, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loader: %w", err)
	}
	for _, e := range links {
		ls := LinkStatus{Name: e.Name()}
		l, err := link.LoadPinnedLink(filepath.Join(st.Dir, "links", e.Name()), nil) // links cannot be opened read-only
		if err == nil {
			if info, err := l.Info(); err == nil {
				ls.Type = linkTypeName(info.Type)
				ls.Defunct = defunctReason(info)
				ls.ProgramID = uint32(info.Program)
				if p, err := ebpf.NewProgramFromID(info.Program); err == nil {
					if pi, err := p.Info(); err == nil {
						ls.Program = pi.Name
					}
					p.Close()
				}
			}
			l.Close()
		}
		st.Links = append(st.Links, ls)
	}
	maps, err := os.ReadDir(filepath.Join(st.Dir, "maps"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loader: %w", err)
	}
	keep := map[string]*ebpf.Map{}
	for _, e := range maps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(st.Dir, "maps", e.Name()), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			st.Maps = append(st.Maps, MapStatus{Name: e.Name(), Type: "unreadable: " + err.Error()})
			continue
		}
		ms := MapStatus{Name: e.Name()}
		if info, err := m.Info(); err == nil {
			ms.Type, ms.KeySize, ms.ValueSize, ms.MaxEntries = info.Type.String(), info.KeySize, info.ValueSize, info.MaxEntries
			ms.Memlock, _ = info.Memlock()
		}
		switch e.Name() {
		case tcMapTcStats:
			st.TC, _ = sumStats(m)
		case xdpMapConfigMap:
			if l, err := readLocalList(m); err == nil {
				st.Local = &l
			}
		case xdpMapXdpStats, xdpMapRegistryStats, xdpMapRegistrySlots:
			keep[e.Name()] = m
			st.Maps = append(st.Maps, ms)
			continue
		}
		m.Close()
		st.Maps = append(st.Maps, ms)
	}
	if slots, stats := keep[xdpMapRegistrySlots], keep[xdpMapRegistryStats]; slots != nil && stats != nil {
		st.Registries, _ = registryCounters(slots, stats)
		if xs := keep[xdpMapXdpStats]; xs != nil {
			st.XDP, _ = xdpCounters(xs, slots, stats)
		}
	}
	for _, m := range keep {
		m.Close()
	}
	sort.Slice(st.Maps, func(i, j int) bool { return st.Maps[i].Name < st.Maps[j].Name })
	return st, nil
}

// MapMemory sums the kernel memory of the pinned maps.
func (s *Status) MapMemory() uint64 {
	var n uint64
	for _, m := range s.Maps {
		n += m.Memlock
	}
	return n
}

func bpffsOr(p string) string {
	if p == "" {
		return DefaultBPFFS
	}
	return p
}

func linkTypeName(t link.Type) string {
	switch t {
	case link.XDPType:
		return "xdp"
	case link.TCXType:
		return "tcx"
	case link.NetNsType:
		return "netns (sk_lookup)"
	}
	return fmt.Sprintf("type %d", t)
}
