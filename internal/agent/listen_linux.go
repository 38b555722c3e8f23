//go:build linux

package agent

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitAcceptQueueEmpty waits (at most limit) until a listener's accept
// queue has been empty on two looks in a row; the serve loop is still
// accepting meanwhile. TCP_INFO's unacked is the queue's length for a
// listening socket.
func waitAcceptQueueEmpty(l net.Listener, limit time.Duration) {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(limit)
	empty := 0
	for empty < 2 && time.Now().Before(deadline) {
		var queued uint32 = 1
		_ = raw.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				queued = info.Unacked
			}
		})
		if queued == 0 {
			empty++
		} else {
			empty = 0
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reusePort sets SO_REUSEPORT on a socket before it binds.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
