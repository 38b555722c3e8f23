// Package loader loads, attaches, pins and reads regedge's kernel programs
// (bpf/, compiled by bpf2go into the *_bpfel.go/.o files beside this one).
// It is the only package that talks to the kernel's BPF subsystem; the rest of
// the agent uses its APIs: push config, block list, counters, flow tags.
package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/regedge/regedge/internal/codec"
)

// MaxProxyPorts is how many proxy ports the SYN guard and TC program watch.
const MaxProxyPorts = 4

// Options are fixed when the programs are loaded. Runtime settings (accepted
// versions, allow-list, block list) have their own calls.
type Options struct {
	BusPort    uint16   // UDP config bus port (default 4874)
	ProxyPorts []uint16 // TCP proxy ports (default 4873); at most MaxProxyPorts
	// SYN guard: SYNs per second per source, and burst. Rate 0 turns it off.
	SynRate  uint64
	SynBurst uint64
	// Map sizes; zero keeps the default of bpf/include/maps.h and bpf/xdp.c.
	RegistryEntries uint32
	BlockEntries    uint32
	SynEntries      uint32
}

// DefaultOptions are the seed's ports with the SYN guard off.
func DefaultOptions() Options {
	return Options{BusPort: 4874, ProxyPorts: []uint16{4873}}
}

func (o *Options) validate() error {
	if o.BusPort == 0 {
		return errors.New("loader: bus port 0")
	}
	if len(o.ProxyPorts) > MaxProxyPorts {
		return fmt.Errorf("loader: %d proxy ports, at most %d", len(o.ProxyPorts), MaxProxyPorts)
	}
	if o.SynRate != 0 && o.SynBurst == 0 {
		return errors.New("loader: SYN guard rate set with burst 0")
	}
	return nil
}

// Objects are the loaded kernel objects, not yet attached. The XDP and TC
// objects share registry_stats and config_map: the TC collection is loaded
// with the XDP collection's maps in their place.
type Objects struct {
	xdp xdpObjects
	tc  tcObjects
	sk  sklookupObjects

	cfgMu sync.Mutex // updateConfigIf

	// fresh: config_map was never written (new maps); the programs must
	// not be attached before it is.
	fresh bool
	// replaced says, one line per map, which pinned maps no longer matched
	// this build's layout and were created afresh (dropIncompatiblePins).
	replaced []string
}

// cfgRequireTrailer is CFG_REQUIRE_TRAILER of bpf/include/protocol.h.
const cfgRequireTrailer = 1

// xdpSpec returns the XDP collection spec with opts applied.
func xdpSpec(opts Options) (*ebpf.CollectionSpec, error) {
	spec, err := loadXdp()
	if err != nil {
		return nil, err
	}
	if err := configByAddress(spec); err != nil {
		return nil, err
	}
	if err := applyXDPOptions(spec, opts); err != nil {
		return nil, err
	}
	return spec, nil
}

// errNoConstant: an XDP object lacks a constant this loader sets (an
// object of another build).
var errNoConstant = errors.New("loader: the XDP object lacks a constant")

// packedPorts is the proxy_ports constant of bpf/include/ports.h: the
// non-zero ports from slot 0 on (the programs stop at the first empty slot).
func packedPorts(ports []uint16) [MaxProxyPorts]uint16 {
	var out [MaxProxyPorts]uint16
	n := 0
	for _, p := range ports {
		if p != 0 && n < MaxProxyPorts {
			out[n] = p
			n++
		}
	}
	return out
}

// applyXDPOptions sets the XDP object's constants and map sizes from opts.
// A constant the object lacks is an error (errNoConstant), after the others
// are set.
func applyXDPOptions(spec *ebpf.CollectionSpec, opts Options) error {
	ports := packedPorts(opts.ProxyPorts)
	var missing []string
	for name, v := range map[string]any{
		xdpVarBusPort: opts.BusPort, xdpVarProxyPorts: ports,
		xdpVarSynRate: opts.SynRate, xdpVarSynBurst: opts.SynBurst,
	} {
		vs, ok := spec.Variables[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("loader: set %s: %w", name, err)
		}
	}
	resize := func(name string, n uint32) {
		if n != 0 {
			spec.Maps[name].MaxEntries = n
		}
	}
	resize(xdpMapRegistryStats, opts.RegistryEntries)
	resize(xdpMapBlockV4, opts.BlockEntries)
	resize(xdpMapBlockV6, opts.BlockEntries)
	resize(xdpMapSynBuckets, opts.SynEntries)
	if opts.SynRate == 0 {
		// The guard is off: its buckets are never touched, so they get no
		// memory (an LRU hash preallocates all of its entries: 6 MiB).
		spec.Maps[xdpMapSynBuckets].MaxEntries = 1
	}
	if len(missing) != 0 {
		sort.Strings(missing)
		return fmt.Errorf("%w: %s", errNoConstant, strings.Join(missing, ", "))
	}
	return nil
}

// configSection is the data section of bpf/xdp.c's config_value, a
// placeholder for config_map's value.
const configSection = ".data.config"

// configByAddress points the XDP program's loads of the config_value
// placeholder at config_map: the program then reads config_map's one value
// by address (a direct map value load) instead of calling a lookup on the
// hot path, and it is the same map (pinned, shared with TC and written by
// the agent) either way. The placeholder's own map is never created.
func configByAddress(spec *ebpf.CollectionSpec) error {
	ph, ok := spec.Maps[configSection]
	if !ok {
		return fmt.Errorf("loader: XDP object has no %s section", configSection)
	}
	if cm := spec.Maps[xdpMapConfigMap]; ph.ValueSize != cm.ValueSize {
		return fmt.Errorf("loader: %s is %d bytes, config_map's value %d", configSection, ph.ValueSize, cm.ValueSize)
	}
	n := 0
	for _, prog := range spec.Programs {
		for i, ins := range prog.Instructions {
			if ins.Reference() == configSection {
				prog.Instructions[i] = ins.WithReference(xdpMapConfigMap)
				n++
			}
		}
	}
	if n == 0 {
		return fmt.Errorf("loader: no reference to %s in the XDP object", configSection)
	}
	delete(spec.Maps, configSection)
	return nil
}

func tcSpec(opts Options) (*ebpf.CollectionSpec, error) {
	spec, err := loadTc()
	if err != nil {
		return nil, err
	}
	ports := packedPorts(opts.ProxyPorts)
	if err := spec.Variables[tcVarProxyPorts].Set(ports); err != nil {
		return nil, fmt.Errorf("loader: set %s: %w", tcVarProxyPorts, err)
	}
	if opts.RegistryEntries != 0 {
		spec.Maps[tcMapRegistryStats].MaxEntries = opts.RegistryEntries
	}
	return spec, nil
}

// Load loads the programs and maps into the kernel without attaching or
// pinning them, with config versions {1} and an empty allow-list.
func Load(opts Options) (*Objects, error) {
	o, err := load(opts, "")
	if err != nil {
		return nil, err
	}
	if err := o.writeDefaults(); err != nil { // fresh maps, nothing attached
		return nil, errors.Join(err, o.Close())
	}
	return o, nil
}

// Settings are the runtime values of config_map and the allow-list tries.
type Settings struct {
	Versions codec.VersionSet
	Allow    []netip.Prefix // bus sources; empty: nobody
	// RequireSigned: the agent has bus public keys (SetRequireSigned).
	RequireSigned bool
}

// load loads the objects; with pinDir set, every map is pinned there by name
// and a map already pinned there (by an earlier agent) is reused, so its
// contents survive a restart. load never writes a map: with reused maps the
// live settings (in use by the programs attached now) are read back, and
// fresh reports that there were none.
func load(opts Options, pinDir string) (o *Objects, err error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	xspec, err := xdpSpec(opts)
	if err != nil {
		return nil, err
	}
	tspec, err := tcSpec(opts)
	if err != nil {
		return nil, err
	}
	sspec, err := loadSklookup()
	if err != nil {
		return nil, fmt.Errorf("loader: sk_lookup spec: %w", err)
	}
	var mapOpts ebpf.MapOptions
	if pinDir != "" {
		mapOpts.PinPath = pinDir
		for _, spec := range []*ebpf.CollectionSpec{xspec, tspec, sspec} {
			for name, m := range spec.Maps {
				if !strings.HasPrefix(name, ".") { // not .rodata: constants are per load
					m.Pinning = ebpf.PinByName
				}
			}
		}
		// Shared maps come from the XDP collection.
		tspec.Maps[tcMapRegistryStats].Pinning = ebpf.PinNone
		tspec.Maps[tcMapRegistrySlots].Pinning = ebpf.PinNone
		tspec.Maps[tcMapConfigMap].Pinning = ebpf.PinNone
	}
	o = &Objects{}
	if pinDir != "" {
		if o.replaced, err = dropIncompatiblePins(pinDir, xspec, tspec, sspec); err != nil {
			return nil, err
		}
	}
	if err := xspec.LoadAndAssign(&o.xdp, &ebpf.CollectionOptions{Maps: mapOpts}); err != nil {
		return nil, loadErr("XDP", err)
	}
	err = tspec.LoadAndAssign(&o.tc, &ebpf.CollectionOptions{Maps: mapOpts, MapReplacements: map[string]*ebpf.Map{
		tcMapRegistryStats: o.xdp.RegistryStats,
		tcMapRegistrySlots: o.xdp.RegistrySlots,
		tcMapConfigMap:     o.xdp.ConfigMap,
	}})
	if err != nil {
		return nil, errors.Join(loadErr("TC", err), o.xdp.Close())
	}
	if err := sspec.LoadAndAssign(&o.sk, &ebpf.CollectionOptions{Maps: mapOpts}); err != nil {
		return nil, errors.Join(loadErr("sk_lookup", err), o.tc.Close(), o.xdp.Close())
	}
	if err := o.readBack(); err != nil {
		return nil, errors.Join(err, o.Close())
	}
	return o, nil
}

// dropIncompatiblePins removes the pin of every map under dir whose layout
// (type, key and value size, max entries, flags) no longer matches this
// build's spec, so that loading creates that map afresh; every other pinned
// map is reused with its contents (a new block list size must not cost the
// allow-list and the counters). An agent still running keeps the map it had
// through its own fds. It returns one line per replaced map, naming it.
func dropIncompatiblePins(dir string, specs ...*ebpf.CollectionSpec) ([]string, error) {
	var replaced []string
	checked := map[string]bool{}
	for _, spec := range specs {
		names := make([]string, 0, len(spec.Maps))
		for name, ms := range spec.Maps {
			if ms.Pinning == ebpf.PinByName {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			ms := spec.Maps[name]
			if checked[ms.Name] {
				continue
			}
			checked[ms.Name] = true
			pin := filepath.Join(dir, ms.Name)
			m, err := ebpf.LoadPinnedMap(pin, nil)
			if errors.Is(err, os.ErrNotExist) {
				continue // created by the load
			}
			if err != nil {
				return nil, fmt.Errorf("loader: open the pinned map %s: %w", ms.Name, err)
			}
			cerr := ms.Compatible(m)
			m.Close()
			if cerr == nil {
				continue
			}
			if !errors.Is(cerr, ebpf.ErrMapIncompatible) {
				return nil, fmt.Errorf("loader: compare the pinned map %s: %w", ms.Name, cerr)
			}
			if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("loader: remove the incompatible pin %s: %w", ms.Name, err)
			}
			diff := strings.TrimSuffix(cerr.Error(), ": "+ebpf.ErrMapIncompatible.Error())
			replaced = append(replaced, fmt.Sprintf("map %s: the pinned map no longer matches this build (%s): replaced it, its entries start empty", ms.Name, diff))
		}
	}
	return replaced, nil
}

// readBack tells a reused config_map from a fresh one: one that was never
// written accepts no version at all.
func (o *Objects) readBack() error {
	var prev xdpRegedgeCfg
	if err := o.xdp.ConfigMap.Lookup(uint32(0), &prev); err != nil {
		return fmt.Errorf("loader: read config_map: %w", err)
	}
	o.fresh = prev.Versions == (codec.VersionSet{})
	return nil
}

// Apply writes settings: the allow-list tries, then config_map in one
// update, so the programs see either the old settings or the new ones.
func (o *Objects) Apply(s Settings) error {
	canon, err := o.setAllowTries(s.Allow)
	if err != nil {
		return err
	}
	if err := o.updateConfig(func(c *xdpRegedgeCfg) {
		c.Versions = s.Versions
		fillAllow(c, canon)
		setFlag(c, cfgRequireTrailer, s.RequireSigned)
	}); err != nil {
		return err
	}
	o.fresh = false
	return nil
}

// Close releases the objects (pinned ones stay in bpffs).
func (o *Objects) Close() error { return errors.Join(o.sk.Close(), o.tc.Close(), o.xdp.Close()) }

// XDP returns the XDP program.
func (o *Objects) XDP() *ebpf.Program { return o.xdp.RegedgeXdp }

// TCIngress and TCEgress return the TC programs.
func (o *Objects) TCIngress() *ebpf.Program { return o.tc.RegedgeTcIngress }
func (o *Objects) TCEgress() *ebpf.Program  { return o.tc.RegedgeTcEgress }

// SetVersions replaces the set of config versions the kernel accepts.
func (o *Objects) SetVersions(vs codec.VersionSet) error {
	return o.updateConfig(func(c *xdpRegedgeCfg) { c.Versions = vs })
}

// updateConfig changes the fields f sets and nothing else: config_map is
// read, changed and written back. Two agents share it while one takes over
// from the other; neither may write back the other's fields from memory.
func (o *Objects) updateConfig(f func(*xdpRegedgeCfg)) error {
	return o.updateConfigIf(func(c *xdpRegedgeCfg) bool { f(c); return true })
}

// updateConfigIf is updateConfig that writes only when f says it changed
// something. Writers in this process take turns (the address watcher writes
// from its own goroutine): each reads what the one before wrote.
func (o *Objects) updateConfigIf(f func(*xdpRegedgeCfg) bool) error {
	o.cfgMu.Lock()
	defer o.cfgMu.Unlock()
	var cfg xdpRegedgeCfg
	if err := o.xdp.ConfigMap.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("loader: read config_map: %w", err)
	}
	if !f(&cfg) {
		return nil
	}
	if err := o.xdp.ConfigMap.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("loader: write config_map: %w", err)
	}
	return nil
}

// SetRequireSigned says whether the agent has bus public keys: then XDP
// drops a bus datagram without a signature trailer (docs/protocol.md §3.1a) as
// ReasonUnsigned once it has passed every other check. The signature itself
// is checked in userspace. Only the flag is changed (updateConfig).
func (o *Objects) SetRequireSigned(on bool) error {
	return o.updateConfig(func(c *xdpRegedgeCfg) { setFlag(c, cfgRequireTrailer, on) })
}

func setFlag(c *xdpRegedgeCfg, flag uint32, on bool) {
	if on {
		c.Flags |= flag
	} else {
		c.Flags &^= flag
	}
}

// writeDefaults fills a fresh config_map: version 1, nobody allowed on the
// bus, and the block list's size.
func (o *Objects) writeDefaults() error {
	n, err := o.countBlocked()
	if err != nil {
		return err
	}
	return o.updateConfig(func(c *xdpRegedgeCfg) {
		local := *c // the address watcher's fields: not defaults, facts
		*c = xdpRegedgeCfg{Versions: codec.DefaultVersions, BlockCount: n}
		c.Local4N, c.Local6N, c.LocalFlags, c.Local4, c.Local6 = local.Local4N, local.Local6N, local.LocalFlags, local.Local4, local.Local6
		fillAllow(c, nil)
	})
}

// SetAllow replaces the bus source allow-list with prefixes. The tries
// always hold the list; a short list is also written into config_map, where
// XDP checks it in a few compares instead of a trie lookup.
func (o *Objects) SetAllow(prefixes []netip.Prefix) error {
	canon, err := o.setAllowTries(prefixes)
	if err != nil {
		return err
	}
	return o.updateConfig(func(c *xdpRegedgeCfg) { fillAllow(c, canon) })
}

func (o *Objects) setAllowTries(prefixes []netip.Prefix) ([]netip.Prefix, error) {
	canon := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		c, err := canonical(p)
		if err != nil {
			return nil, err
		}
		canon = append(canon, c)
	}
	if err := replaceLPM(o.xdp.AllowV4, o.xdp.AllowV6, canon, func() any { v := uint8(1); return &v }); err != nil {
		return nil, err
	}
	return canon, nil
}

const allowUseTrie = 0xffffffff

// fillAllow writes the short-list form of the allow-list into cfg.
func fillAllow(cfg *xdpRegedgeCfg, allow []netip.Prefix) {
	var v4, v6 []netip.Prefix
	for _, p := range allow {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	cfg.Allow4N, cfg.Allow6N = allowUseTrie, allowUseTrie
	clear(cfg.Allow4[:])
	clear(cfg.Allow6[:])
	if len(v4) <= len(cfg.Allow4) {
		cfg.Allow4N = uint32(len(v4))
		for i, p := range v4 {
			a, m := p.Addr().As4(), maskBytes(p.Bits(), 4)
			cfg.Allow4[i].Addr, cfg.Allow4[i].Mask = nativeU32(a[:]), nativeU32(m)
		}
	}
	if len(v6) <= len(cfg.Allow6) {
		cfg.Allow6N = uint32(len(v6))
		for i, p := range v6 {
			a, m := p.Addr().As16(), maskBytes(p.Bits(), 16)
			for w := 0; w < 4; w++ {
				cfg.Allow6[i].Addr[w], cfg.Allow6[i].Mask[w] = nativeU32(a[4*w:]), nativeU32(m[4*w:])
			}
		}
	}
}

// maskBytes is the netmask of a prefix length, in network order.
func maskBytes(bits, size int) []byte {
	m := make([]byte, size)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// Counters returns the per-reason counters of the XDP hook, summed over CPUs.
// Index ReasonOK counts passed packets: those of xdp_stats and the valid
// bus datagrams, which XDP counts only in their registry's counters.
func (o *Objects) Counters() ([NumReasons]uint64, error) {
	return xdpCounters(o.xdp.XdpStats, o.xdp.RegistrySlots, o.xdp.RegistryStats)
}

func xdpCounters(stats, slots, registry *ebpf.Map) ([NumReasons]uint64, error) {
	out, err := sumStats(stats)
	if err != nil {
		return out, err
	}
	bus, err := readRegistry(slots, registry)
	if err != nil {
		return out, err
	}
	for k, c := range bus {
		if k.dir == dirBus {
			out[ReasonOK] += c.Packets
		}
	}
	return out, nil
}

// TCCounters returns the TC hook's counters (it drops nothing: index
// ReasonOK counts every packet it saw).
func (o *Objects) TCCounters() ([NumReasons]uint64, error) {
	return sumStats(o.tc.TcStats)
}

func sumStats(m *ebpf.Map) ([NumReasons]uint64, error) {
	var out [NumReasons]uint64
	var perCPU []uint64
	for i := Reason(0); i < NumReasons; i++ {
		if err := m.Lookup(i, &perCPU); err != nil {
			return out, fmt.Errorf("loader: read %s[%d]: %w", m, i, err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// KnowRegistries gives each of hashes an entry, at zero, in the registry
// counters of valid bus datagrams: XDP counts a datagram's registry only
// when it has one (bpf/include/maps.h count_registry; the others count as
// plain passes), so that datagrams with made-up hashes, from forged bus
// sources, can neither fill the pinned map nor take the slots. Entries that
// exist (an earlier run's counts) are kept.
func (o *Objects) KnowRegistries(hashes []uint32) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	zero := make([]xdpRegistryCounters, ncpu)
	for _, h := range hashes {
		err := o.xdp.RegistryStats.Update(xdpRegistryKey{Hash: h, Dir: dirBus}, zero, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("loader: registry 0x%08x in registry_stats: %w", h, err)
		}
	}
	return nil
}

// RegistryCounter is the traffic of one registry hash in one direction.
type RegistryCounter struct {
	Hash    uint32
	Egress  bool
	Packets uint64
	Bytes   uint64
}

// RegistryCounters returns the per-registry-hash counters, summed over CPUs
// and over the slot cache and the hash map that back them.
func (o *Objects) RegistryCounters() ([]RegistryCounter, error) {
	return registryCounters(o.xdp.RegistrySlots, o.xdp.RegistryStats)
}

// The dir of a registry key: bpf/include/maps.h.
const (
	dirIngress = 0
	dirEgress  = 1
	dirBus     = 2 // ingress: valid bus datagrams
)

type registryKey struct{ hash, dir uint32 }

// readRegistry sums the registry counters over CPUs and over the slot
// cache and the hash map that back them, by hash and dir.
func readRegistry(slots, stats *ebpf.Map) (map[registryKey]*RegistryCounter, error) {
	sum := map[registryKey]*RegistryCounter{}
	add := func(hash, dir uint32, packets, bytes uint64) {
		k := registryKey{hash, dir}
		c := sum[k]
		if c == nil {
			c = &RegistryCounter{Hash: hash, Egress: dir == dirEgress}
			sum[k] = c
		}
		c.Packets += packets
		c.Bytes += bytes
	}
	all, err := readSlots(slots)
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if s.Packets != 0 {
			add(s.Hash, s.Dir, s.Packets, s.Bytes)
		}
	}
	if err := readRegistryStats(stats, add); err != nil {
		return nil, err
	}
	return sum, nil
}

// readRegistryStats calls add for every CPU's counters of every key of
// registry_stats: in batches of 256 keys, or one key at a time where batch
// operations are missing.
func readRegistryStats(stats *ebpf.Map, add func(hash, dir uint32, packets, bytes uint64)) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	const chunk = 256
	keys := make([]xdpRegistryKey, chunk)
	values := make([]xdpRegistryCounters, chunk*ncpu)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := stats.BatchLookup(&cursor, keys, values, nil)
		for i := 0; i < n; i++ {
			for c := 0; c < ncpu; c++ {
				v := values[i*ncpu+c]
				add(keys[i].Hash, keys[i].Dir, v.Packets, v.Bytes)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
			break
		}
		if err != nil {
			return fmt.Errorf("loader: read registry_stats: %w", err)
		}
	}
	var k xdpRegistryKey
	var perCPU []xdpRegistryCounters
	it := stats.Iterate()
	for it.Next(&k, &perCPU) {
		for _, v := range perCPU {
			add(k.Hash, k.Dir, v.Packets, v.Bytes)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("loader: read registry_stats: %w", err)
	}
	return nil
}

// readSlots reads every slot of registry_slots on every CPU, in one batch
// (Counters reads them per packet in tests, and per scrape).
func readSlots(slots *ebpf.Map) ([]xdpRegistrySlot, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	n := int(slots.MaxEntries())
	keys := make([]uint32, n)
	values := make([]xdpRegistrySlot, n*ncpu)
	var cursor ebpf.MapBatchCursor
	got, err := slots.BatchLookup(&cursor, keys, values, nil)
	if err == nil || (errors.Is(err, ebpf.ErrKeyNotExist) && got == n) {
		return values, nil
	}
	// No batch operations (or a short batch): one slot at a time.
	values = values[:0]
	var perCPU []xdpRegistrySlot
	for i := uint32(0); i < uint32(n); i++ {
		if err := slots.Lookup(i, &perCPU); err != nil {
			return nil, fmt.Errorf("loader: read registry_slots[%d]: %w", i, err)
		}
		values = append(values, perCPU...)
	}
	return values, nil
}

// registryCounters is the per-registry traffic by hash and direction: bus
// datagrams and proxy connections' ingress together.
func registryCounters(slots, stats *ebpf.Map) ([]RegistryCounter, error) {
	sum, err := readRegistry(slots, stats)
	if err != nil {
		return nil, err
	}
	type key struct {
		hash   uint32
		egress bool
	}
	merged := map[key]*RegistryCounter{}
	for _, c := range sum {
		k := key{c.Hash, c.Egress}
		if m := merged[k]; m != nil {
			m.Packets += c.Packets
			m.Bytes += c.Bytes
			continue
		}
		cc := *c
		merged[k] = &cc
	}
	out := make([]RegistryCounter, 0, len(merged))
	for _, c := range merged {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Hash != out[j].Hash {
			return out[i].Hash < out[j].Hash
		}
		return !out[i].Egress
	})
	return out, nil
}
