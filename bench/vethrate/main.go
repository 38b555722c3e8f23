//go:build linux

// Command vethrate measures, in one run, how fast invalid config bus
// datagrams are dropped by regedge's XDP program and how fast a Go userspace
// receiver doing the same check handles them with XDP off. Traffic flows
// only between two network namespaces it creates (and removes) itself, over
// a veth pair; every phase is bounded in time and in packets.
//
//	sudo go run ./bench/vethrate -duration 3s
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/vethpair"
)

func main() {
	duration := flag.Duration("duration", 3*time.Second, "length of each phase")
	maxPackets := flag.Int64("max", 50_000_000, "packets sent per phase at most")
	senders := flag.Int("senders", 1, "generator goroutines (each on its own CPU)")
	flag.Parse()
	if err := run(*duration, *maxPackets, *senders); err != nil {
		fmt.Fprintln(os.Stderr, "vethrate:", err)
		os.Exit(1)
	}
}

// warnOn reports a failed clean-up (namespaces, a bpffs mount left behind)
// without hiding the run's own result.
func warnOn(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "vethrate: %s: %v\n", what, err)
	}
}

func run(duration time.Duration, maxPackets int64, senders int) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates network namespaces and attaches XDP")
	}
	h, err := vethpair.Create()
	if err != nil {
		return err
	}
	defer func() { warnOn("remove the namespaces", h.Close()) }()

	// An invalid datagram: a valid UPDATE with its checksum broken.
	f := codec.Update(codec.FieldRows, 40)
	payload := codec.AppendDatagram(nil, codec.DefaultState(), &f)
	payload[len(payload)-1] ^= 0xff
	if codec.CheckDatagram(payload, &codec.DefaultVersions) != codec.ReasonChecksum {
		return errors.New("the test datagram is not a checksum failure")
	}
	fmt.Printf("datagram: %d bytes, verdict checksum; %d senders, %v per phase, at most %d packets\n",
		len(payload), senders, duration, maxPackets)

	// Phase 1: XDP attached in B drops every datagram.
	bpffs, err := os.MkdirTemp("", "regedge-vethrate-bpffs")
	if err != nil {
		return err
	}
	defer func() { warnOn("remove the bpffs mount point", os.Remove(bpffs)) }()
	if _, err := loader.EnsureBPFFS(bpffs); err != nil {
		return err
	}
	defer func() { warnOn("unmount bpffs", unix.Unmount(bpffs, unix.MNT_DETACH)) }()
	var dp *loader.Datapath
	var openErr error
	if err := vethpair.In(h.B, func() {
		dp, openErr = loader.Open(loader.Config{Options: loader.DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}})
	}); err != nil {
		return err
	}
	if openErr != nil {
		return openErr
	}
	// Let every source through the allow-list, so the datagram check runs.
	if err := dp.SetAllow([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}); err != nil {
		return err
	}
	before, err := dp.Counters()
	if err != nil {
		return err
	}
	sent1, el1, err := blast(h, payload, duration, maxPackets, senders)
	if err != nil {
		return err
	}
	after, err := dp.Counters()
	if err != nil {
		return err
	}
	dropped := after[loader.ReasonChecksum] - before[loader.ReasonChecksum]
	xdpRate := float64(dropped) / el1.Seconds()
	if err := dp.Close(); err != nil {
		return err
	}
	if err := vethpair.In(h.B, func() { openErr = loader.Detach(bpffs, []string{h.IfB}) }); err != nil || openErr != nil {
		return errors.Join(err, openErr)
	}

	// Phase 2: no checks in XDP; a Go receiver in B reads and checks every
	// datagram. A veth accepts redirected frames only with an XDP program
	// on the peer, so B gets one that returns XDP_PASS and does nothing else.
	pass, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		return err
	}
	defer pass.Close()
	var passLink link.Link
	if err := vethpair.In(h.B, func() {
		var ifB *net.Interface
		if ifB, openErr = net.InterfaceByName(h.IfB); openErr == nil {
			passLink, openErr = link.AttachXDP(link.XDPOptions{Program: pass, Interface: ifB.Index})
		}
	}); err != nil || openErr != nil {
		return errors.Join(err, openErr)
	}
	defer passLink.Close()
	var conn *net.UDPConn
	if err := vethpair.In(h.B, func() {
		conn, openErr = net.ListenUDP("udp4", &net.UDPAddr{IP: h.B4.AsSlice(), Port: 4874})
	}); err != nil || openErr != nil {
		return errors.Join(err, openErr)
	}
	defer conn.Close()
	_ = conn.SetReadBuffer(8 << 20)
	var handled, invalid atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		receive(ctx, conn, &handled, &invalid)
	}()
	sent2, el2, err := blast(h, payload, duration, maxPackets, senders)
	cancel()
	conn.SetReadDeadline(time.Now())
	wg.Wait()
	if err != nil {
		return err
	}
	goRate := float64(handled.Load()) / el2.Seconds()

	fmt.Printf("XDP drop:           %12.0f pkt/s  (%d dropped of %d sent in %v)\n", xdpRate, dropped, sent1, el1.Round(time.Millisecond))
	fmt.Printf("Go receiver check:  %12.0f pkt/s  (%d handled, %d judged invalid, of %d sent in %v)\n", goRate, handled.Load(), invalid.Load(), sent2, el2.Round(time.Millisecond))
	if goRate > 0 {
		fmt.Printf("ratio XDP / Go:     %12.1fx\n", xdpRate/goRate)
	}
	return nil
}

// blast sends payload from A to B's bus port until duration or maxPackets.
// The generator is BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: an XDP
// program in A redirects each run's frame out of A's veth end, the fastest
// generator on this kernel (docs/kernel.md, "Kernel facts"); sockets in Go would be the
// bottleneck of both phases.
func blast(h *vethpair.Hosts, payload []byte, duration time.Duration, maxPackets int64, senders int) (int64, time.Duration, error) {
	var frame []byte
	var gen *ebpf.Program
	var err error
	if e := vethpair.In(h.A, func() { frame, gen, err = generator(h, payload) }); e != nil || err != nil {
		return 0, 0, errors.Join(e, err)
	}
	defer gen.Close()
	const perRun = 1 << 16
	var sent atomic.Int64
	deadline := time.Now().Add(duration)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := vethpair.In(h.A, func() {
				for time.Now().Before(deadline) && sent.Load() < maxPackets {
					if _, err := gen.Run(&ebpf.RunOptions{Data: frame, Repeat: perRun, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES}); err != nil {
						errs <- fmt.Errorf("live-frames run: %w", err)
						return
					}
					sent.Add(perRun)
				}
			})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return sent.Load(), time.Since(start), nil
}

// generator builds the Ethernet/IPv4/UDP frame from A to B's bus port and
// the XDP program that redirects it out of A's veth end. Call it inside A.
func generator(h *vethpair.Hosts, payload []byte) ([]byte, *ebpf.Program, error) {
	ifA, err := net.InterfaceByName(h.IfA)
	if err != nil {
		return nil, nil, err
	}
	var macB net.HardwareAddr
	if err := vethpair.In(h.B, func() {
		var ifB *net.Interface
		if ifB, err = net.InterfaceByName(h.IfB); err == nil {
			macB = ifB.HardwareAddr
		}
	}); err != nil {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	frame := append(append([]byte(nil), macB...), ifA.HardwareAddr...)
	frame = append(frame, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	a4, b4 := h.A4.As4(), h.B4.As4()
	copy(ip[12:], a4[:])
	copy(ip[16:], b4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := make([]byte, 8) // checksum 0: none, valid for IPv4
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 4874)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	frame = append(append(append(frame, ip...), udp...), payload...)

	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, int32(ifA.Index)),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnRedirect.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("generator program: %w", err)
	}
	return frame, prog, nil
}

// receive reads datagrams in batches (recvmmsg) and checks each as the
// agent's userspace path would, until ctx is done.
func receive(ctx context.Context, conn *net.UDPConn, handled, invalid *atomic.Int64) {
	pc := ipv4.NewPacketConn(conn)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for ctx.Err() == nil {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		for i := 0; i < n; i++ {
			b := msgs[i].Buffers[0][:msgs[i].N]
			if codec.CheckDatagram(b, &codec.DefaultVersions) != codec.ReasonOK {
				invalid.Add(1)
			}
		}
		handled.Add(int64(n))
	}
}
