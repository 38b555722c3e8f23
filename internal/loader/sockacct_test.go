//go:build linux

package loader

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

// hashServer is a minimal HTTP/1.1 server in namespace B on the proxy port
// that does what the proxy does for accounting: for every request it tells
// the kernel the request's registry hash (X-Hash) on the connection's
// socket, then answers X-Size bytes. When a connection ends it reports the
// socket's own segment counts (TCP_INFO), the reference the kernel's
// per-hash counts are checked against.
type hashServer struct {
	ln    net.Listener
	dp    *Datapath
	tls   *tls.Config
	ended chan tcpCounts
}

type tcpCounts struct{ segsIn, segsOut uint32 }

func startHashServer(t *testing.T, h *testutil.Hosts, dp *Datapath, tlsConf *tls.Config) *hashServer {
	t.Helper()
	s := &hashServer{dp: dp, tls: tlsConf, ended: make(chan tcpCounts, 16)}
	testutil.In(t, h.B, func() {
		lc := ListenConfig()
		var err error
		if s.ln, err = lc.Listen(t.Context(), "tcp", "192.0.2.2:4873"); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { s.ln.Close() })
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			go s.serve(t, c.(*net.TCPConn))
		}
	}()
	return s
}

func (s *hashServer) serve(t *testing.T, sock *net.TCPConn) {
	var conn net.Conn = sock
	if s.tls != nil {
		conn = tls.Server(sock, s.tls)
	}
	r := bufio.NewReader(conn)
	body := make([]byte, 64<<10)
	for {
		var hash uint64
		size := 0
		line, err := r.ReadString('\n')
		for err == nil && line != "\r\n" {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
			switch k {
			case "X-Hash":
				hash, _ = strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 32)
			case "X-Size":
				size, _ = strconv.Atoi(v)
			}
			line, err = r.ReadString('\n')
		}
		if err != nil {
			// The client closed. Under TLS that was its close_notify:
			// wait for the TCP FIN too, so the socket's counts are final.
			if s.tls != nil {
				io.Copy(io.Discard, sock)
			}
			break
		}
		if err := s.dp.TagSocket(sock, uint32(hash)); err != nil {
			t.Errorf("TagSocket: %v", err)
			return
		}
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		for n := size; n > 0; n -= len(body) {
			if _, err := conn.Write(body[:min(n, len(body))]); err != nil {
				return
			}
		}
	}
	info, err := unix.GetsockoptTCPInfo(rawFD(sock), unix.IPPROTO_TCP, unix.TCP_INFO)
	sock.Close() // sends the FIN (through TC) before it returns
	if err != nil {
		t.Errorf("TCP_INFO: %v", err)
		return
	}
	s.ended <- tcpCounts{info.Segs_in, info.Segs_out}
}

func rawFD(c syscall.Conn) int {
	raw, _ := c.SyscallConn()
	var out int
	raw.Control(func(fd uintptr) { out = int(fd) })
	return out
}

// exchange runs requests (hash, size) on one connection from A and reads
// every answer in full, then closes; it returns the request bytes sent.
func exchange(t *testing.T, h *testutil.Hosts, tlsOn bool, reqs ...[2]int) int {
	t.Helper()
	var raw net.Conn
	testutil.In(t, h.A, func() {
		var err error
		if raw, err = net.DialTimeout("tcp", "192.0.2.2:4873", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	conn := raw
	if tlsOn {
		conn = tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) // the test's own self-signed server
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	sent := 0
	for _, rq := range reqs {
		head := fmt.Sprintf("GET /t HTTP/1.1\r\nHost: edge\r\nX-Hash: 0x%08x\r\nX-Size: %d\r\n\r\n", rq[0], rq[1])
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		sent += len(head)
		var n int
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("response head: %v", err)
			}
			if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
				n, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if line == "\r\n" {
				break
			}
		}
		if got, err := io.CopyN(io.Discard, r, int64(n)); err != nil || got != int64(rq[1]) {
			t.Fatalf("body: %d of %d bytes: %v", got, rq[1], err)
		}
	}
	return sent
}

type hashCount struct{ inP, inB, outP, outB uint64 }

func countsByHash(t *testing.T, o *Objects) map[uint32]hashCount {
	t.Helper()
	cs, err := o.RegistryCounters()
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]hashCount{}
	for _, c := range cs {
		v := out[c.Hash]
		if c.Egress {
			v.outP, v.outB = c.Packets, c.Bytes
		} else {
			v.inP, v.inB = c.Packets, c.Bytes
		}
		out[c.Hash] = v
	}
	return out
}

// TestSocketAccountingOverVeth: real TCP between two namespaces, counted by
// TC per registry hash from the socket the proxy tagged: with TC alone (no
// XDP to linearise what arrives: GSO/GRO skbs as a real NIC's), with
// XDP+TC, and over TLS. Responses of 1 MiB count in full; keep-alive
// requests for different hashes on one connection count under their own
// hash; and the packets counted equal the socket's own segment counts.
func TestSocketAccountingOverVeth(t *testing.T) {
	for _, tc := range []struct {
		name     string
		xdp, tls bool
	}{{"tc-alone", false, false}, {"xdp+tc", true, false}, {"tc-alone-tls", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := testutil.NewHosts(t)
			bpffs := testBPFFS(t)
			dp := openRaw(t, h, Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB},
				Settings: &Settings{Versions: codec.DefaultVersions}})
			defer detachIn(t, h, bpffs)
			defer dp.Close()
			if !tc.xdp {
				dropXDP(t, dp, bpffs)
			}
			var tlsConf *tls.Config
			if tc.tls {
				certFile, keyFile := testutil.SelfSignedCert(t, t.TempDir(), "edge.test")
				cert, err := tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					t.Fatal(err)
				}
				tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
			}
			srv := startHashServer(t, h, dp, tlsConf)
			const mib = 1 << 20
			const h1, h2, h3 = 0x11111111, 0x22222222, 0x33333333

			// One keep-alive connection: h1 1 MiB, h2 1 MiB, h1 small.
			exchange(t, h, tc.tls, [2]int{h1, mib}, [2]int{h2, mib}, [2]int{h1, 1000})
			// Five downloads of 1 MiB under h3, a connection each.
			for i := 0; i < 5; i++ {
				exchange(t, h, tc.tls, [2]int{h3, mib})
			}
			var segsIn, segsOut uint64
			for i := 0; i < 6; i++ {
				select {
				case c := <-srv.ended:
					segsIn += uint64(c.segsIn)
					segsOut += uint64(c.segsOut)
				case <-time.After(10 * time.Second):
					t.Fatal("the server did not see every connection end")
				}
			}
			got := countsByHash(t, dp.Objects)
			t.Logf("by hash %+v; the sockets' own segments: in %d, out %d", got, segsIn, segsOut)

			within := func(what string, v, lo, hi uint64) {
				t.Helper()
				if v < lo || v > hi {
					t.Errorf("%s = %d, want %d..%d", what, v, lo, hi)
				}
			}
			// Bytes are skb->len: payload plus headers once per skb (and
			// TLS records): at least the body, at most 6% more.
			body := func(n uint64) (uint64, uint64) { return n, n + n*6/100 + 16<<10 }
			lo, hi := body(mib + 1000)
			within("h1 egress bytes", got[h1].outB, lo, hi)
			lo, hi = body(mib)
			within("h2 egress bytes", got[h2].outB, lo, hi)
			lo, hi = body(5 * mib)
			within("h3 egress bytes", got[h3].outB, lo, hi)
			// Each request's head counts under its own hash: h2's request
			// came after h1's 1 MiB on the same connection.
			for _, hh := range []uint32{h1, h2, h3} {
				if got[hh].inP == 0 || got[hh].inB < 60 {
					t.Errorf("0x%08x: ingress %d packets, %d bytes: its requests are missing", hh, got[hh].inP, got[hh].inB)
				}
			}
			if got[h2].inB > 64<<10 {
				t.Errorf("h2 ingress %d bytes: more than its request and the ACKs of its response", got[h2].inB)
			}
			// Every packet of the six connections is counted once, by its
			// GSO segments, against the sockets' own segment counts (read
			// after the client's FIN, before the server's): egress is
			// those plus each server FIN; ingress is those less each
			// handshake's SYN and ACK, which reach a listener, before
			// there is a connection to count them under.
			var inP, outP uint64
			for _, c := range got {
				inP += c.inP
				outP += c.outP
			}
			within("egress packets", outP, segsOut+6, segsOut+6)
			within("ingress packets", inP, segsIn-12, segsIn-12)
			if len(got) != 3 {
				t.Errorf("counted hashes %v, want only the three used", got)
			}
		})
	}
}

// dropXDP detaches the XDP program of dp, leaving TC alone on the interface.
func dropXDP(t *testing.T, dp *Datapath, bpffs string) {
	t.Helper()
	for i, nl := range dp.links {
		if strings.HasPrefix(nl.name, "xdp-") {
			if err := os.Remove(filepath.Join(PinRoot(bpffs), LayoutVersion, "links", nl.name)); err != nil {
				t.Fatal(err)
			}
			nl.l.Close()
			dp.links = append(dp.links[:i], dp.links[i+1:]...)
			return
		}
	}
	t.Fatal("no XDP link to drop")
}
