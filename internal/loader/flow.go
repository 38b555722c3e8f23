package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// TagSource says where a flow tag's state came from.
type TagSource uint8

const (
	TagNone TagSource = 0 // no config header: the agent's own state
	TagDump TagSource = 1 // X-Bun-Config-Dump
	TagHash TagSource = 2 // X-Bun-Registry-Hash
)

func (s TagSource) String() string {
	switch s {
	case TagDump:
		return "dump"
	case TagHash:
		return "hash"
	}
	return "none"
}

// FlowTag is what the TC program learned from a connection's request head.
// It is a hint: the proxy re-checks the headers and counts disagreements.
type FlowTag struct {
	RegistryHash uint32
	Version      uint8
	FeatureFlags uint32
	Verdict      Reason // ok, state, version or malformed
	Source       TagSource
	LastSeen     time.Duration // CLOCK_BOOTTIME of the flow's last packet
}

func flowKey(client, server netip.AddrPort) (tcFlowKey, error) {
	c, s := client.Addr().Unmap(), server.Addr().Unmap()
	if c.Is4() != s.Is4() {
		return tcFlowKey{}, fmt.Errorf("loader: flow %v -> %v mixes IPv4 and IPv6", client, server)
	}
	k := tcFlowKey{ClientPort: client.Port(), ServerPort: server.Port(), Family: 6}
	if c.Is4() {
		k.Family = 4
		ca, sa := c.As4(), s.As4()
		k.Client[0] = nativeU32(ca[:])
		k.Server[0] = nativeU32(sa[:])
	} else {
		ca, sa := c.As16(), s.As16()
		for i := 0; i < 4; i++ {
			k.Client[i] = nativeU32(ca[4*i:])
			k.Server[i] = nativeU32(sa[4*i:])
		}
	}
	return k, nil
}

// nativeU32 reads 4 network-order bytes as the kernel stores them in a
// __u32 field of a struct (memory order), on a little-endian host.
func nativeU32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// FlowTag returns the tag of the connection from client to server (the
// proxy's local address), if the TC program wrote one. Read it after the
// first request bytes arrived: the tag is written on the first payload segment.
func (o *Objects) FlowTag(client, server netip.AddrPort) (FlowTag, bool, error) {
	k, err := flowKey(client, server)
	if err != nil {
		return FlowTag{}, false, err
	}
	var v tcFlowTag
	if err := o.tc.FlowTags.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return FlowTag{}, false, nil
		}
		return FlowTag{}, false, fmt.Errorf("loader: flow tag: %w", err)
	}
	return FlowTag{
		RegistryHash: v.Hash, Version: v.Version, FeatureFlags: v.Flags,
		Verdict: Reason(v.Verdict), Source: TagSource(v.Source), LastSeen: time.Duration(v.LastNs),
	}, true, nil
}

// TrimFlowTags deletes tags of flows idle for longer than maxIdle and
// returns how many it deleted. FIN/RST and the LRU remove most tags; this
// catches flows that vanished without either.
func (o *Objects) TrimFlowTags(maxIdle time.Duration) (int, error) {
	now, err := bootTime()
	if err != nil {
		return 0, err
	}
	var stale []tcFlowKey
	var k tcFlowKey
	var v tcFlowTag
	it := o.tc.FlowTags.Iterate()
	for it.Next(&k, &v) {
		if now-time.Duration(v.LastNs) > maxIdle {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("loader: iterate flow tags: %w", err)
	}
	n := 0
	for i := range stale {
		if err := o.tc.FlowTags.Delete(&stale[i]); err == nil {
			n++
		}
	}
	return n, nil
}

// HashClass is the optional mark and priority for one registry hash's flows.
type HashClass struct {
	Mark     uint32
	Priority uint32
}

// SetHashClass sets (or with a zero class, removes) the mark/priority of a
// registry hash's flows.
func (o *Objects) SetHashClass(hash uint32, c HashClass) error {
	if c == (HashClass{}) {
		if err := o.tc.HashClasses.Delete(hash); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("loader: hash class: %w", err)
		}
		return nil
	}
	v := tcHashClass{Mark: c.Mark, Priority: c.Priority}
	if err := o.tc.HashClasses.Put(hash, &v); err != nil {
		return fmt.Errorf("loader: hash class: %w", err)
	}
	return nil
}

// FlowHash is the registry hash of a connection's flow tag, for the proxy's
// handoff check; ok is false without a tag (or with a malformed-header tag).
func (o *Objects) FlowHash(client, server netip.AddrPort) (uint32, bool) {
	tag, ok, err := o.FlowTag(client, server)
	if err != nil || !ok || tag.Verdict == ReasonMalformed {
		return 0, false
	}
	return tag.RegistryHash, true
}
