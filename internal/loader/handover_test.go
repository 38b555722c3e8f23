//go:build linux

package loader

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

// reusePort is a ListenConfig.Control that sets SO_REUSEPORT: two agents
// bind the same ports while one takes over from the other.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// TestSecondOpenWhileFirstRuns: an agent that has opened the datapath holds
// no lock, so the next one opens on the same pins while it runs, takes the
// programs over, and the first can tell.
func TestSecondOpenWhileFirstRuns(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := testBPFFS(t)
	cfg := Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}, SkLookup: true,
		Settings: &Settings{Versions: codec.DefaultVersions}}
	dp1 := openRaw(t, h, cfg)
	defer detachIn(t, h, bpffs)
	defer dp1.Close()
	if s, err := dp1.Superseded(); err != nil || s {
		t.Fatalf("alone: superseded %v, %v", s, err)
	}
	done := make(chan *Datapath, 1)
	go func() { // within the lock's 10 s wait, or it fails
		var dp *Datapath
		testutil.In(t, h.B, func() {
			var err error
			if dp, err = Open(cfg); err != nil {
				t.Errorf("a second Open while the first runs: %v", err)
			}
		})
		done <- dp
	}()
	var dp2 *Datapath
	select {
	case dp2 = <-done:
	case <-time.After(8 * time.Second):
		t.Fatal("the second Open waited for the first agent's lock")
	}
	if dp2 == nil {
		t.FailNow()
	}
	defer dp2.Close()
	if s, err := dp1.Superseded(); err != nil || !s {
		t.Errorf("after the second Open: first superseded %v, %v; want true", s, err)
	}
	if s, err := dp2.Superseded(); err != nil || s {
		t.Errorf("the second: superseded %v, %v; want false", s, err)
	}
}

// TestSteeringHandsOverToTheNewSocket: two sockets bound to the same port
// (SO_REUSEPORT, as two agents during a rollout); new connections and
// datagrams go to the registered one, from the moment the next registers
// its own, never to the other member of the reuseport group; when the
// registered socket closes, the kernel drops it from the SOCKMAP.
func TestSteeringHandsOverToTheNewSocket(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := testBPFFS(t)
	dp := openRaw(t, h, Config{Options: DefaultOptions(), BPFFS: bpffs, SkLookup: true, Settings: &Settings{Versions: codec.DefaultVersions}})
	defer detachIn(t, h, bpffs)
	defer dp.Close()
	for _, d := range append(must(SteerFor(ServiceProxy, "0.0.0.0", 4873, false)), must(SteerFor(ServiceBus, "", 4874, true))...) {
		if err := dp.Steer(d); err != nil {
			t.Fatal(err)
		}
	}
	var old, next *net.TCPListener
	var oldBus, nextBus *net.UDPConn
	testutil.In(t, h.B, func() {
		lc := ListenConfig()
		lc.Control = reusePort
		for _, l := range []**net.TCPListener{&old, &next} {
			ln, err := lc.Listen(context.Background(), "tcp", "0.0.0.0:4873")
			if err != nil {
				t.Fatal(err)
			}
			*l = ln.(*net.TCPListener)
		}
		for _, u := range []**net.UDPConn{&oldBus, &nextBus} {
			pc, err := lc.ListenPacket(context.Background(), "udp", ":4874")
			if err != nil {
				t.Fatal(err)
			}
			*u = pc.(*net.UDPConn)
		}
	})
	defer old.Close()
	defer oldBus.Close()
	accepted := func(l *net.TCPListener) bool {
		l.SetDeadline(time.Now().Add(2 * time.Second))
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	dialN := func(n int) {
		t.Helper()
		testutil.In(t, h.A, func() {
			for i := 0; i < n; i++ {
				c, err := net.DialTimeout("tcp", "192.0.2.2:4873", 2*time.Second)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				c.Close()
			}
		})
	}
	got := func(u *net.UDPConn) bool {
		u.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _, err := u.ReadFromUDP(make([]byte, 64))
		return err == nil
	}
	sendBus := func(dst string) {
		t.Helper()
		testutil.In(t, h.A, func() {
			c, err := net.Dial("udp", dst)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("hello"))
			c.Close()
		})
	}

	for _, step := range []struct {
		name      string
		register  *net.TCPListener
		bus       *net.UDPConn
		want, not *net.TCPListener
		wantBus   *net.UDPConn
	}{
		{"first agent registered", old, oldBus, old, next, oldBus},
		{"the next agent took over", next, nextBus, next, old, nextBus},
	} {
		if err := dp.RegisterSocket(ServiceProxy, step.register); err != nil {
			t.Fatal(err)
		}
		if err := dp.RegisterSocket(ServiceBus, step.bus); err != nil {
			t.Fatal(err)
		}
		dialN(8) // a reuseport group would spread eight over both
		for i := 0; i < 8; i++ {
			if !accepted(step.want) {
				t.Fatalf("%s: connection %d did not reach the registered socket", step.name, i)
			}
		}
		step.not.SetDeadline(time.Now().Add(100 * time.Millisecond))
		if c, err := step.not.Accept(); err == nil {
			c.Close()
			t.Fatalf("%s: a connection reached the other socket of the reuseport group", step.name)
		}
		for _, dst := range []string{"192.0.2.2:4874", "[2001:db8::2]:4874"} {
			sendBus(dst)
			if !got(step.wantBus) {
				t.Fatalf("%s: the datagram to %s did not reach the registered bus socket", step.name, dst)
			}
		}
	}
	if ok, err := dp.Registered(ServiceProxy, old); err != nil || ok {
		t.Errorf("the old socket still registered: %v, %v", ok, err)
	}
	if ok, err := dp.Registered(ServiceProxy, next); err != nil || !ok {
		t.Errorf("the new socket not registered: %v, %v", ok, err)
	}
	// The registered socket closes (the new agent died): the kernel drops
	// it, and the normal lookup finds the remaining listener.
	next.Close()
	nextBus.Close()
	if ok, err := dp.Registered(ServiceProxy, old); err != nil || ok {
		t.Errorf("after the new socket closed: old registered %v, %v", ok, err)
	}
	dialN(1)
	if !accepted(old) {
		t.Fatal("with no socket registered, the normal lookup did not find the listener")
	}
	if steered, _, err := dp.SteerCounters(); err != nil || steered < 18 {
		t.Errorf("steered %d, %v; want at least 18", steered, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
