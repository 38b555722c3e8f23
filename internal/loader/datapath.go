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
}

// Datapath is the attached kernel half of the agent. Its maps and links are
// pinned under BPFFS/regedge/LayoutVersion, so closing it (or the process
// dying) leaves packets judged by the programs; Open by the next agent reuses
// the maps and swaps the programs in the pinned links.
type Datapath struct {
	*Objects
	cfg   Config
	root  string // BPFFS/regedge
	dir   string // root/LayoutVersion
	lock  *os.File
	links []namedLink
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

// Open mounts bpffs if needed, takes the pin directory's lock, loads (or
// reuses) the maps, and attaches (or updates) the programs.
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
	lock, err := lockDir(d.root)
	if err != nil {
		return nil, err
	}
	d.lock = lock
	if err := d.open(); err != nil {
		return nil, errors.Join(err, d.closeAll())
	}
	return d, nil
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
	objs, err := load(d.cfg.Options, filepath.Join(target, "maps"))
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// The pinned maps no longer fit (new sizes or layout): start over.
		d.Notes = append(d.Notes, "pinned maps did not match this build's maps: replaced them (counters and lists start empty)")
		_ = os.RemoveAll(filepath.Join(target, "maps"))
		if err := os.MkdirAll(filepath.Join(target, "maps"), 0o700); err != nil {
			return fmt.Errorf("loader: %w", err)
		}
		objs, err = load(d.cfg.Options, filepath.Join(target, "maps"))
	}
	if err != nil {
		return err
	}
	d.Objects = objs
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
	entries, err := os.ReadDir(linkDir)
	if err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	for _, e := range entries {
		if _, ok := want[e.Name()]; !ok {
			if err := unpinLink(filepath.Join(linkDir, e.Name())); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		prog := want[name]
		pin := filepath.Join(linkDir, name)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := l.Update(prog); err != nil {
				l.Close()
				return fmt.Errorf("loader: update %s to the new program: %w", name, err)
			}
			d.links = append(d.links, namedLink{name, l})
			continue
		}
		l, note, err := d.attach(name, prog)
		if err != nil {
			return err
		}
		if note != "" {
			d.Notes = append(d.Notes, note)
		}
		if l == nil {
			continue // attached without a link (netlink fallback): nothing to pin
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("loader: pin %s: %w", name, err)
		}
		d.links = append(d.links, namedLink{name, l})
	}
	return nil
}

// attach creates one attachment by its pin name.
func (d *Datapath) attach(name string, prog *ebpf.Program) (link.Link, string, error) {
	if name == "sklookup-netns" {
		ns, err := os.Open("/proc/thread-self/ns/net") // this thread's, which may differ from the process's
		if err != nil {
			return nil, "", fmt.Errorf("loader: sk_lookup: %w", err)
		}
		defer ns.Close()
		l, err := link.AttachNetNs(int(ns.Fd()), prog)
		if err != nil {
			return nil, "", fmt.Errorf("loader: attach sk_lookup: %w", err)
		}
		return l, "", nil
	}
	kind, ifname, _ := strings.Cut(name, "-")
	if kind == "tcx" {
		var dir string
		dir, ifname, _ = strings.Cut(ifname, "-")
		return attachTC(ifname, dir == "ingress", prog)
	}
	return attachXDP(ifname, d.cfg.XDPGeneric, prog)
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
	if errors.Is(err, ebpf.ErrNotSupported) {
		if nerr := netlinkXDP(idx, prog, generic); nerr == nil {
			return nil, fmt.Sprintf("XDP on %s attached through netlink: this kernel has no XDP bpf_link, so it is not pinned", ifname), nil
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
// netlink/clsact fallbacks on the given interfaces are removed.
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
// to 10 s for another agent or `regedge bpf detach` to finish.
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
			return nil, fmt.Errorf("loader: lock %s (is another regedge agent running?): %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
