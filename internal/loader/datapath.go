package loader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// LayoutVersion names the pin directory layout; a change that old pins
// cannot serve gets a new one.
const LayoutVersion = "v1"

// DefaultBPFFS is where bpffs is (or gets) mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// Config says what Open loads and where it attaches.
type Config struct {
	Options
	BPFFS      string   // bpffs mount point; DefaultBPFFS when empty
	Interfaces []string // XDP and TC attach here
	XDPGeneric bool     // generic (skb) XDP instead of native
	SkLookup   bool     // attach sk_lookup in the caller's network namespace
	// Settings, when set, are written before any program is attached or
	// swapped in: the new programs never run with settings that are not
	// this agent's. nil keeps the pinned settings (defaults on fresh maps).
	Settings *Settings
	// LocalAddrError, when set, hears every failure of the watcher that
	// keeps the local address list current, from the watcher's goroutine
	// (it recovers by itself: the caller only reports them).
	LocalAddrError func(error)
}

// Datapath is the attached kernel half of the agent. Its maps and links are
// pinned under BPFFS/regedge/LayoutVersion, so closing it (or the process
// dying) leaves packets judged by the programs; Open by the next agent reuses
// the maps and swaps the programs in the pinned links, while this one may
// still run (a rollout): see Superseded.
type Datapath struct {
	*Objects
	cfg   Config
	root  string // BPFFS/regedge
	dir   string // root/LayoutVersion
	lock  *os.File
	links []namedLink
	progs map[string]ebpf.ProgramID // what this datapath attached, by link name
	local *localWatch               // keeps config_map's local address list current
	// Notes say, in plain words, which fallbacks are in force.
	Notes []string
}

type namedLink struct {
	name string
	l    link.Link
}

// PinRoot returns the directory under bpffs that holds regedge's pins.
func PinRoot(bpffs string) string {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	return filepath.Join(bpffs, "regedge")
}

// Open mounts bpffs if needed, probes the kernel, loads (or reuses) the
// maps, writes the settings and attaches (or updates) the programs, holding
// the pin directory's lock while it does: two agents never open at once,
// but an agent that has opened holds no lock, so the next one (a rollout,
// or a restart that overlaps the old process) can take over while it runs.
func Open(cfg Config) (*Datapath, error) {
	if cfg.BPFFS == "" {
		cfg.BPFFS = DefaultBPFFS
	}
	d := &Datapath{cfg: cfg, root: PinRoot(cfg.BPFFS)}
	d.dir = filepath.Join(d.root, LayoutVersion)
	if mounted, err := EnsureBPFFS(cfg.BPFFS); err != nil {
		return nil, err
	} else if mounted {
		d.Notes = append(d.Notes, fmt.Sprintf("bpffs was not mounted: mounted it at %s", cfg.BPFFS))
	}
	if err := Probe(); err != nil {
		return nil, err
	}
	lock, err := lockDir(d.root)
	if err != nil {
		return nil, err
	}
	d.lock = lock
	if err := d.open(); err != nil {
		return nil, errors.Join(err, d.closeAll())
	}
	d.lock = nil
	if err := lock.Close(); err != nil { // releases the flock
		return nil, errors.Join(fmt.Errorf("loader: release the lock: %w", err), d.closeAll())
	}
	return d, nil
}

// Superseded reports whether another agent has taken over: a pinned link
// this datapath attached now runs another program (the next agent's Open
// swapped its own in). The agent then leaves the kernel's settings alone
// and hands its sockets over (docs/upgrade.md).
func (d *Datapath) Superseded() (bool, error) {
	for _, nl := range d.links {
		info, err := nl.l.Info()
		if err != nil {
			return false, fmt.Errorf("loader: %s: %w", nl.name, err)
		}
		if info.Program != d.progs[nl.name] {
			return true, nil
		}
	}
	return false, nil
}

func (d *Datapath) open() (err error) {
	fresh := false
	target := d.dir
	if _, statErr := os.Stat(d.dir); errors.Is(statErr, os.ErrNotExist) {
		// First start: build everything in a temporary directory and rename
		// it into place once complete, so a crash never leaves half a layout.
		fresh = true
		target = filepath.Join(d.root, fmt.Sprintf("tmp-%d", os.Getpid())) // bpffs refuses names with dots
		_ = os.RemoveAll(target)
		defer func() {
			if err != nil {
				// Nothing half-built stays behind: removing the pins
				// detaches whatever this attempt attached.
				err = errors.Join(err, d.closeAll())
				_ = os.RemoveAll(target)
			}
		}()
	}
	for _, sub := range []string{"maps", "links"} {
		if err := os.MkdirAll(filepath.Join(target, sub), 0o700); err != nil {
			return fmt.Errorf("loader: %w", err)
		}
	}
	// Only the pinned maps whose layout changed are replaced (load); the
	// rest keep their entries.
	objs, err := load(d.cfg.Options, filepath.Join(target, "maps"))
	if err != nil {
		return err
	}
	d.Objects = objs
	d.Notes = append(d.Notes, objs.replaced...)
	if err := removeStaleMapPins(filepath.Join(target, "maps")); err != nil {
		return err
	}
	switch {
	case d.cfg.Settings != nil:
		err = objs.Apply(*d.cfg.Settings)
	case objs.fresh:
		err = objs.writeDefaults()
	}
	if err == nil && len(objs.replaced) > 0 && !objs.fresh {
		// A replaced block trie starts empty: config_map's count of its
		// entries must say so (or it kept a count of entries now gone).
		err = objs.writeBlockCount()
	}
	if err == nil {
		// Before the programs run: their first drops find the list.
		err = d.watchLocal()
	}
	if err != nil {
		return err
	}
	if testHookBeforeAttach != nil {
		testHookBeforeAttach(d)
	}
	if err := d.attachAll(filepath.Join(target, "links")); err != nil {
		return err
	}
	if fresh {
		if err := os.Rename(target, d.dir); err != nil {
			return fmt.Errorf("loader: move pins into place: %w", err)
		}
	}
	return nil
}

// removeStaleMapPins removes pins of maps this build does not have (an older
// build's): an agent of that build still running keeps its maps through its
// own fds; a rollback creates them again.
func removeStaleMapPins(dir string) error {
	known := map[string]bool{}
	for _, specs := range []func() (*ebpf.CollectionSpec, error){loadXdp, loadTc, loadSklookup} {
		spec, err := specs()
		if err != nil {
			return fmt.Errorf("loader: %w", err)
		}
		for name := range spec.Maps {
			known[name] = true
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	for _, e := range entries {
		if !known[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("loader: remove the stale pin %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// testHookBeforeAttach, when set by a test, runs after the maps are loaded
// and written and before any link is created or updated.
var testHookBeforeAttach func(*Datapath)

// attachAll makes the set of pinned links equal the configured one: new
// attachments are created and pinned, existing pins get the new program, and
// pins for interfaces no longer configured are removed (detaching them).
func (d *Datapath) attachAll(linkDir string) error {
	want := map[string]*ebpf.Program{}
	for _, ifname := range d.cfg.Interfaces {
		want["xdp-"+ifname] = d.XDP()
		want["tcx-ingress-"+ifname] = d.TCIngress()
		want["tcx-egress-"+ifname] = d.TCEgress()
	}
	if d.cfg.SkLookup {
		want["sklookup-netns"] = d.SkLookup()
	}
	reattach, err := d.prunePins(linkDir, want)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(want))
	d.progs = map[string]ebpf.ProgramID{}
	for name, prog := range want {
		names = append(names, name)
		info, err := prog.Info()
		if err != nil {
			return fmt.Errorf("loader: %s: %w", name, err)
		}
		id, _ := info.ID()
		d.progs[name] = id
	}
	slices.Sort(names)
	for _, name := range names {
		prog := want[name]
		pin := filepath.Join(linkDir, name)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			why, err := d.stale(name, l)
			if err != nil {
				l.Close()
				return err
			}
			if why == "" {
				err := l.Update(prog)
				if err == nil {
					d.links = append(d.links, namedLink{name, l})
					continue
				}
				if !errors.Is(err, unix.ENOLINK) {
					l.Close()
					return fmt.Errorf("loader: update %s to the new program: %w", name, err)
				}
				why = "its link was severed"
			}
			// A link whose interface or namespace is gone cannot be updated
			// and detaches nothing: unpin it and attach anew.
			uerr := l.Unpin()
			l.Close()
			if uerr != nil {
				return fmt.Errorf("loader: unpin the stale link %s: %w", name, uerr)
			}
			d.Notes = append(d.Notes, fmt.Sprintf("%s: %s: unpinned it and attached anew", name, why))
		}
		l, note, err := d.attach(name, prog)
		if why, ok := reattach[name]; ok && err != nil {
			// The agent logs this error, not the notes: say the pins went.
			return fmt.Errorf("%w (its pinned links were defunct, %s: unpinned them)", err, why)
		}
		if err != nil {
			return err
		}
		if why, ok := reattach[name]; ok {
			d.Notes = append(d.Notes, fmt.Sprintf("%s: %s: unpinned it and attached anew", name, why))
		}
		if note != "" {
			d.Notes = append(d.Notes, note)
		}
		if l == nil {
			continue // attached without a link (clsact fallback): nothing to pin
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("loader: pin %s: %w", name, err)
		}
		d.links = append(d.links, namedLink{name, l})
	}
	return nil
}

// prunePins removes, before anything is attached, the link pins that are
// not wanted (interfaces no longer configured: removing the pin detaches)
// and the defunct ones, whose interface or network namespace no longer
// exists, wanted or not: a configured interface that was deleted must not
// keep its pins behind when its attach then fails. It returns the defunct
// wanted ones, by name, with why: they are attached anew.
func (d *Datapath) prunePins(linkDir string, want map[string]*ebpf.Program) (map[string]string, error) {
	entries, err := os.ReadDir(linkDir)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	reattach := map[string]string{}
	for _, e := range entries {
		name, pin := e.Name(), filepath.Join(linkDir, e.Name())
		_, wanted := want[name]
		why := ""
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			info, ierr := l.Info()
			l.Close()
			if ierr == nil {
				why = defunctReason(info)
			}
		}
		if wanted && why == "" {
			continue
		}
		if err := unpinLink(pin); err != nil {
			return nil, err
		}
		switch {
		case wanted:
			reattach[name] = why
		case why != "":
			d.Notes = append(d.Notes, fmt.Sprintf("%s: %s: unpinned it", name, why))
		}
	}
	return reattach, nil
}

// defunctReason says why a pinned link attaches nothing any more ("" when
// it still does): the kernel severs an XDP or TCX link when its interface
// is deleted, and an sk_lookup link when its network namespace goes; the
// link info then gives interface index 0 (namespace inode 0). It reads
// the link alone, so it holds in any network namespace (`bpf status`).
func defunctReason(info *link.Info) string {
	switch {
	case info.XDP() != nil && info.XDP().Ifindex == 0, info.TCX() != nil && info.TCX().Ifindex == 0:
		return "its interface was deleted (the link is severed)"
	case info.NetNs() != nil && info.NetNs().NetnsInode == 0:
		return "its network namespace is gone (the link is severed)"
	}
	return ""
}

// stale says why a pinned link no longer attaches where its name says (""
// when it does): it is defunct (defunctReason), its interface was deleted
// and re-created under a new index, or its network namespace is another.
func (d *Datapath) stale(name string, l link.Link) (string, error) {
	info, err := l.Info()
	if err != nil {
		return "", fmt.Errorf("loader: %s: %w", name, err)
	}
	if why := defunctReason(info); why != "" {
		return why, nil
	}
	if name == "sklookup-netns" {
		ns := info.NetNs()
		ino, err := threadNetnsInode()
		if ns == nil || err != nil {
			return "", err
		}
		if ns.NetnsInode != ino {
			return "it attaches another network namespace", nil
		}
		return "", nil
	}
	var have uint32
	switch {
	case info.XDP() != nil:
		have = info.XDP().Ifindex
	case info.TCX() != nil:
		have = info.TCX().Ifindex
	default:
		return "", nil
	}
	idx, err := ifindex(ifnameOf(name))
	if err != nil {
		return "", err
	}
	if int(have) != idx {
		return fmt.Sprintf("it attaches interface index %d, %s is now %d (deleted and re-created)", have, ifnameOf(name), idx), nil
	}
	return "", nil
}

// ifnameOf is the interface of a link pin name: xdp-IF, tcx-ingress-IF,
// tcx-egress-IF.
func ifnameOf(name string) string {
	kind, rest, _ := strings.Cut(name, "-")
	if kind == "tcx" {
		_, rest, _ = strings.Cut(rest, "-")
	}
	return rest
}

// threadNetnsInode is the inode of this thread's network namespace.
func threadNetnsInode() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("loader: network namespace: %w", err)
	}
	return uint32(st.Ino), nil
}

// attach creates one attachment by its pin name.
func (d *Datapath) attach(name string, prog *ebpf.Program) (link.Link, string, error) {
	if name == "sklookup-netns" {
		ns, err := os.Open("/proc/thread-self/ns/net") // this thread's, which may differ from the process's
		if err != nil {
			return nil, "", fmt.Errorf("loader: sk_lookup: %w", err)
		}
		defer ns.Close()
		if err := checkSkLookupFree(int(ns.Fd())); err != nil {
			return nil, "", err
		}
		l, err := link.AttachNetNs(int(ns.Fd()), prog)
		if err != nil {
			return nil, "", fmt.Errorf("loader: attach sk_lookup: %w", err)
		}
		return l, "", nil
	}
	kind, rest, _ := strings.Cut(name, "-")
	if kind == "tcx" {
		dir, _, _ := strings.Cut(rest, "-")
		return attachTC(ifnameOf(name), dir == "ingress", prog)
	}
	return attachXDP(ifnameOf(name), d.cfg.XDPGeneric, prog)
}

func ifindex(ifname string) (int, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("loader: interface %q: %w", ifname, err)
	}
	return iface.Index, nil
}

func attachXDP(ifname string, generic bool, prog *ebpf.Program) (link.Link, string, error) {
	idx, err := ifindex(ifname)
	if err != nil {
		return nil, "", err
	}
	flags := link.XDPDriverMode
	if generic {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: idx, Flags: flags})
	if err == nil {
		return l, "", nil
	}
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
		if herr := xdpHolder(ifname, idx); herr != nil {
			return nil, "", fmt.Errorf("loader: attach XDP to %s: %w", ifname, herr)
		}
	}
	mode := "native"
	if generic {
		mode = "generic"
	}
	return nil, "", fmt.Errorf("loader: attach XDP (%s) to %s: %w", mode, ifname, err)
}

func attachTC(ifname string, ingress bool, prog *ebpf.Program) (link.Link, string, error) {
	idx, err := ifindex(ifname)
	if err != nil {
		return nil, "", err
	}
	at := ebpf.AttachTCXEgress
	if ingress {
		at = ebpf.AttachTCXIngress
	}
	if err := checkTCXFree(ifname, idx, at); err != nil {
		return nil, "", fmt.Errorf("loader: attach TC to %s: %w", ifname, err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: at})
	if err == nil {
		return l, "", nil
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		if nerr := clsactAttach(idx, ingress, prog); nerr != nil {
			return nil, "", fmt.Errorf("loader: TCX is missing and clsact failed on %s: %w", ifname, nerr)
		}
		return nil, fmt.Sprintf("TCX is missing on this kernel: TC on %s uses clsact with a direct-action filter", ifname), nil
	}
	return nil, "", fmt.Errorf("loader: attach TCX to %s: %w", ifname, err)
}

func unpinLink(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		// Not a link we can open: remove the pin file anyway.
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("loader: remove %s: %w", path, rerr)
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("loader: unpin %s: %w", path, err)
	}
	return nil
}

// Close releases this process's handles. Pinned maps and links stay: the
// programs keep judging packets until the next agent takes over or Detach.
func (d *Datapath) Close() error { return d.closeAll() }

func (d *Datapath) closeAll() error {
	var errs []error
	if d.local != nil {
		d.local.close() // stops its writes before the maps close
		d.local = nil
	}
	for _, nl := range d.links {
		errs = append(errs, nl.l.Close())
	}
	d.links = nil
	if d.Objects != nil {
		errs = append(errs, d.Objects.Close())
		d.Objects = nil
	}
	if d.lock != nil {
		errs = append(errs, d.lock.Close()) // releases the flock
		d.lock = nil
	}
	return errors.Join(errs...)
}

// DropLink forgets the attachment of that pin name after its pin was
// removed by hand (tests that want TC without XDP): closing it detaches.
func (d *Datapath) DropLink(name string) {
	for i, nl := range d.links {
		if nl.name == name {
			nl.l.Close()
			d.links = append(d.links[:i], d.links[i+1:]...)
			return
		}
	}
}

// Links lists the attachments this datapath holds, by pin name.
func (d *Datapath) Links() []string {
	out := make([]string, 0, len(d.links))
	for _, nl := range d.links {
		out = append(out, nl.name)
	}
	return out
}

// Detach removes all of regedge's kernel state under bpffs: every pinned
// link is unpinned (detaching its program), every map pin removed, and
// clsact fallbacks on the given interfaces are removed.
func Detach(bpffs string, interfaces []string) error {
	root := PinRoot(bpffs)
	if ok, err := IsBPFFS(filepath.Dir(root)); err != nil || !ok {
		return err // nothing pinned when bpffs is not mounted
	}
	lock, err := lockDir(root)
	if err != nil {
		return err
	}
	defer lock.Close()
	var errs []error
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		links, _ := os.ReadDir(filepath.Join(dir, "links"))
		for _, l := range links {
			errs = append(errs, unpinLink(filepath.Join(dir, "links", l.Name())))
		}
		errs = append(errs, os.RemoveAll(dir))
	}
	for _, ifname := range interfaces {
		if idx, err := ifindex(ifname); err == nil {
			errs = append(errs, removeFallbacks(idx))
		}
	}
	return errors.Join(errs...)
}

// lockDir takes an exclusive flock on dir (created if missing), waiting up
// to 10 s for another agent's Open or `regedge bpf detach` to finish.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("loader: lock %s (another regedge agent is opening, or a detach runs): %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
