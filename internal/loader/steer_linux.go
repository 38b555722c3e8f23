//go:build linux

package loader

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// RegisterProxySocket puts the proxy's listening TCP socket into the
// SOCKMAP; steered connections are assigned to it from then on. An IPv4
// socket serves IPv4 destinations; an IPv6 one serves IPv6 destinations and,
// when it is dual-stack and no IPv4 socket is registered, IPv4 ones too.
func (o *Objects) RegisterProxySocket(c syscall.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("loader: proxy socket: %w", err)
	}
	var putErr error
	if err := raw.Control(func(fd uintptr) {
		if proto, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_MPTCP {
			putErr = errors.New("the listener is an MPTCP socket (Go's default for listeners since 1.24), which a SOCKMAP cannot hold: create it with loader.ListenConfig()")
			return
		}
		slot := uint32(0)
		if dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom == unix.AF_INET6 {
			slot = 1
		}
		putErr = o.sk.ProxySocket.Put(slot, uint64(fd))
	}); err != nil {
		return fmt.Errorf("loader: proxy socket: %w", err)
	}
	if putErr != nil {
		return fmt.Errorf("loader: put the proxy socket into the SOCKMAP: %w", putErr)
	}
	return nil
}
