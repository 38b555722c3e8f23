package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
)

// BlockEntry is one prefix on the source block list. Expires is zero for an
// entry that never expires.
type BlockEntry struct {
	Prefix  netip.Prefix
	Expires time.Time
}

// Block puts prefix on the block list for ttl (0: until removed). XDP drops
// every packet from it with reason blocked. Abusive sources found by the
// proxy go here.
func (o *Objects) Block(prefix netip.Prefix, ttl time.Duration) error {
	p, err := canonical(prefix)
	if err != nil {
		return err
	}
	var v xdpBlockEntry
	if ttl > 0 {
		now, err := bootTime()
		if err != nil {
			return err
		}
		v.ExpiresNs = uint64(now + ttl)
	}
	if p.Addr().Is4() {
		err = o.xdp.BlockV4.Put(lpmKey4(p), &v)
	} else {
		err = o.xdp.BlockV6.Put(lpmKey6(p), &v)
	}
	if err != nil {
		return fmt.Errorf("loader: block %v: %w", p, err)
	}
	return o.writeBlockCount()
}

// countBlocked counts the block list's entries.
func (o *Objects) countBlocked() (uint32, error) {
	k4, err4 := mapKeys[xdpLpmV4](o.xdp.BlockV4)
	k6, err6 := mapKeys[xdpLpmV6](o.xdp.BlockV6)
	if err := errors.Join(err4, err6); err != nil {
		return 0, fmt.Errorf("loader: count the block list: %w", err)
	}
	return uint32(len(k4) + len(k6)), nil
}

// writeBlockCount tells XDP how many entries the block list has: it skips
// the lookup when there are none.
func (o *Objects) writeBlockCount() error {
	n, err := o.countBlocked()
	if err != nil {
		return err
	}
	return o.updateConfig(func(c *xdpRegedgeCfg) { c.BlockCount = n })
}

// Unblock removes prefix from the block list.
func (o *Objects) Unblock(prefix netip.Prefix) error {
	p, err := canonical(prefix)
	if err != nil {
		return err
	}
	if p.Addr().Is4() {
		err = o.xdp.BlockV4.Delete(lpmKey4(p))
	} else {
		err = o.xdp.BlockV6.Delete(lpmKey6(p))
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("loader: unblock %v: %w", p, err)
	}
	return o.writeBlockCount()
}

// Blocked lists the block list; expired entries are removed on the way.
func (o *Objects) Blocked() ([]BlockEntry, error) {
	live, expired, err := listBlocks(o.xdp.BlockV4, o.xdp.BlockV6)
	if err != nil {
		return nil, err
	}
	for _, p := range expired {
		if err := o.Unblock(p); err != nil {
			return nil, err
		}
	}
	return live, nil
}

// listBlocks reads a pair of block tries: the live entries, and the
// prefixes whose time has passed (still in the map until removed).
func listBlocks(v4, v6 *ebpf.Map) (live []BlockEntry, expired []netip.Prefix, err error) {
	now, err := bootTime()
	if err != nil {
		return nil, nil, err
	}
	wall := time.Now()
	add := func(p netip.Prefix, v xdpBlockEntry) {
		if v.ExpiresNs != 0 && time.Duration(v.ExpiresNs) <= now {
			expired = append(expired, p)
			return
		}
		e := BlockEntry{Prefix: p}
		if v.ExpiresNs != 0 {
			e.Expires = wall.Add(time.Duration(v.ExpiresNs) - now)
		}
		live = append(live, e)
	}
	keys4, err := mapKeys[xdpLpmV4](v4)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: list block_v4: %w", err)
	}
	for _, k := range keys4 {
		var v xdpBlockEntry
		if err := v4.Lookup(k, &v); err == nil {
			add(prefixOf4(k), v)
		}
	}
	keys6, err := mapKeys[xdpLpmV6](v6)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: list block_v6: %w", err)
	}
	for _, k := range keys6 {
		var v xdpBlockEntry
		if err := v6.Lookup(k, &v); err == nil {
			add(prefixOf6(k), v)
		}
	}
	return live, expired, nil
}

// ErrNoPins: there is no regedge kernel state under the bpffs given.
var ErrNoPins = errors.New("loader: no pinned regedge maps (is the agent's kernel datapath attached, and is --bpffs right?)")

// ErrNotBlocked: the prefix to unblock is not on the block list.
var ErrNotBlocked = errors.New("not on the block list")

// PinnedBlockList is the token-failure block list in the pins under a
// bpffs, for `regedge bpf blocklist`: it works whether or not an agent
// runs (the list outlives the agent that filled it).
type PinnedBlockList struct {
	v4, v6 *ebpf.Map
}

// OpenPinnedBlockList opens the pinned block tries under bpffs
// (writable, for Unblock).
func OpenPinnedBlockList(bpffs string) (*PinnedBlockList, error) {
	dir := filepath.Join(PinRoot(bpffs), LayoutVersion, "maps")
	v4, err := ebpf.LoadPinnedMap(filepath.Join(dir, xdpMapBlockV4), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoPins
	}
	if err != nil {
		return nil, fmt.Errorf("loader: %s: %w", filepath.Join(dir, xdpMapBlockV4), err)
	}
	v6, err := ebpf.LoadPinnedMap(filepath.Join(dir, xdpMapBlockV6), nil)
	if err != nil {
		v4.Close()
		return nil, fmt.Errorf("loader: %s: %w", filepath.Join(dir, xdpMapBlockV6), err)
	}
	return &PinnedBlockList{v4: v4, v6: v6}, nil
}

// List returns the live entries (expired ones are left for the agent).
func (b *PinnedBlockList) List() ([]BlockEntry, error) {
	live, _, err := listBlocks(b.v4, b.v6)
	return live, err
}

// Unblock removes exactly prefix; ErrNotBlocked when it is not there.
// The kernel stops dropping the source at once. (The entry count the XDP
// program reads stays as the agent last wrote it: at worst a lookup that
// finds nothing, until the agent next changes the list.)
func (b *PinnedBlockList) Unblock(prefix netip.Prefix) error {
	p, err := canonical(prefix)
	if err != nil {
		return err
	}
	if p.Addr().Is4() {
		err = b.v4.Delete(lpmKey4(p))
	} else {
		err = b.v6.Delete(lpmKey6(p))
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("%v: %w", p, ErrNotBlocked)
	}
	if err != nil {
		return fmt.Errorf("loader: unblock %v: %w", p, err)
	}
	return nil
}

// Close closes the maps (the pins stay).
func (b *PinnedBlockList) Close() error {
	return errors.Join(b.v4.Close(), b.v6.Close())
}

// blockListSize counts the live entries of o's block list.
func (o *Objects) blockListSize() (int, error) {
	live, _, err := listBlocks(o.xdp.BlockV4, o.xdp.BlockV6)
	return len(live), err
}
