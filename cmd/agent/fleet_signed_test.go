//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

// spoofUDP sends payload in an IPv4/UDP packet with a source address and
// port of the caller's choosing, from a raw socket in the current network
// namespace: what anyone on a network path can do.
func spoofUDP(t *testing.T, src, dst netip.AddrPort, payload []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IP_HDRINCL
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer unix.Close(fd)
	pkt := make([]byte, 28, 28+len(payload))
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_UDP // version/IHL, TTL, protocol
	binary.BigEndian.PutUint16(pkt[2:], uint16(28+len(payload)))
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	binary.BigEndian.PutUint16(pkt[20:], src.Port())
	binary.BigEndian.PutUint16(pkt[22:], dst.Port())
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload))) // UDP checksum 0: none (IPv4)
	pkt = append(pkt, payload...)
	// The kernel fills the IP checksum (and the ID) of an IP_HDRINCL packet.
	if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
		t.Fatalf("send spoofed packet: %v", err)
	}
}

// TestFleetSignedBus: three agents with bus.publicKeys, kernel datapath
// attached. A datagram that claims to come from the controller (an allowed
// source) and sets registryHash=0x00000000, unsigned or signed with another
// key, changes nothing on any agent and draws no answer to the controller's
// address; a signed push from the controller converges on every agent.
func TestFleetSignedBus(t *testing.T) {
	dir := t.TempDir()
	keyFile, pubFile, err := token.GenerateKey(filepath.Join(dir, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = token.GenerateKey(filepath.Join(dir, "attacker"))
	if err != nil {
		t.Fatal(err)
	}
	attackerKey, err := token.ReadPrivateKey(filepath.Join(dir, "attacker", "edge.key"))
	if err != nil {
		t.Fatal(err)
	}
	star, fleet, targets := startFleet(t, 3, func(_ int, f *fleetAgent) { f.cfg.Bus.PublicKeys = []string{pubFile} })
	before := make([]*loader.Status, len(fleet))
	for i, f := range fleet {
		st, err := loader.ReadStatus(f.cfg.Agent.BPFFS)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = st
	}

	// The attack: registryHash=0 (the public fallback) "from" the
	// controller's address on each link, whose port a victim socket holds
	// to catch any answer.
	fallback := codec.Update(codec.FieldRegistryHash, 0)
	unsigned := codec.AppendDatagram(nil, codec.DefaultState(), &fallback)
	wrongKey := codec.AppendSigned(nil, unsigned, uint64(time.Now().UnixMilli()), attackerKey)
	victims := make([]*net.UDPConn, len(fleet))
	testutil.In(t, star.Hub, func() {
		for i, f := range fleet {
			victim, err := net.ListenUDP("udp4", &net.UDPAddr{IP: f.spoke.HubAddr.AsSlice()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { victim.Close() })
			victims[i] = victim
			src := victim.LocalAddr().(*net.UDPAddr).AddrPort()
			dst := netip.AddrPortFrom(f.spoke.Addr, 4874)
			spoofUDP(t, src, dst, unsigned)
			spoofUDP(t, src, dst, wrongKey)
		}
	})
	for i, f := range fleet {
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("XDP on %s to drop the unsigned datagram", f.spoke.If), func() bool {
			st, err := loader.ReadStatus(f.cfg.Agent.BPFFS)
			return err == nil && st.XDP[loader.ReasonUnsigned]-before[i].XDP[loader.ReasonUnsigned] == 1
		})
	}

	// The controller's signed push: converges everywhere. Each agent reads
	// its socket in order, so by the time it answers the push it has judged
	// the spoofed signed datagram too.
	var out, errs string
	var code int
	testutil.In(t, star.Hub, func() {
		out, errs, code = run(t, "", "config", "push", "--key", keyFile, "--to", strings.Join(targets, ","), "rows=40", "cols=120")
	})
	if code != 0 || strings.Count(out, " yes ") != 3 {
		t.Fatalf("signed push: exit %d %s\n%s", code, errs, out)
	}
	for i, f := range fleet {
		s := f.agent.State()
		if s.Rows != 40 || s.Cols != 120 || s.RegistryHash != 0xa1b2c3d4 {
			t.Fatalf("agent on %s: %v; want rows 40, cols 120 and the registry hash untouched", f.spoke.If, s)
		}
		victims[i].SetReadDeadline(time.Now())
		buf := make([]byte, 512)
		if n, from, err := victims[i].ReadFromUDP(buf); err == nil {
			t.Fatalf("the spoofed source %v got %x from %v: a reflection", victims[i].LocalAddr(), buf[:n], from)
		}
		st, err := loader.ReadStatus(f.cfg.Agent.BPFFS)
		if err != nil {
			t.Fatal(err)
		}
		// The signed datagrams pass XDP (the signature is userspace's): the
		// attacker's and the push's.
		if passed := st.XDP[loader.ReasonOK] - before[i].XDP[loader.ReasonOK]; passed < 2 {
			t.Errorf("agent on %s: %d datagrams passed XDP, want the wrong-key one and the push", f.spoke.If, passed)
		}
	}
	// The state file holds the pushed state, not the attacker's.
	b, err := os.ReadFile(fleet[0].cfg.Agent.StateFile)
	if err != nil || !strings.Contains(string(b), "0x01a1b2c3d40000000702287800") {
		t.Fatalf("state file: %q, %v", b, err)
	}
}
