package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
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
	now, err := bootTime()
	if err != nil {
		return nil, err
	}
	wall := time.Now()
	var out []BlockEntry
	add := func(p netip.Prefix, v xdpBlockEntry) error {
		if v.ExpiresNs != 0 && time.Duration(v.ExpiresNs) <= now {
			return o.Unblock(p)
		}
		e := BlockEntry{Prefix: p}
		if v.ExpiresNs != 0 {
			e.Expires = wall.Add(time.Duration(v.ExpiresNs) - now)
		}
		out = append(out, e)
		return nil
	}
	keys4, err := mapKeys[xdpLpmV4](o.xdp.BlockV4)
	if err != nil {
		return nil, fmt.Errorf("loader: list block_v4: %w", err)
	}
	for _, k := range keys4 {
		var v xdpBlockEntry
		if err := o.xdp.BlockV4.Lookup(k, &v); err == nil {
			if err := add(prefixOf4(k), v); err != nil {
				return nil, err
			}
		}
	}
	keys6, err := mapKeys[xdpLpmV6](o.xdp.BlockV6)
	if err != nil {
		return nil, fmt.Errorf("loader: list block_v6: %w", err)
	}
	for _, k := range keys6 {
		var v xdpBlockEntry
		if err := o.xdp.BlockV6.Lookup(k, &v); err == nil {
			if err := add(prefixOf6(k), v); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// bootTime is CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func bootTime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("loader: clock_gettime(CLOCK_BOOTTIME): %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
