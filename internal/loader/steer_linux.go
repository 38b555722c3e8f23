//go:build linux

package loader

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// RegisterSocket puts a service's socket (a listening TCP socket, or an
// unconnected UDP one) into the SOCKMAP, replacing what was there: steered
// connections go to it from the next one on. An IPv4 socket serves IPv4
// destinations; an IPv6 one serves IPv6 destinations and, when it is
// dual-stack and no IPv4 socket is registered, IPv4 ones too. The kernel
// drops the entry when the socket's last fd closes.
func (o *Objects) RegisterSocket(s Service, c syscall.Conn) error {
	var putErr error
	err := control(c, func(fd int) {
		slot, err := socketSlot(s, fd)
		if err != nil {
			putErr = err
			return
		}
		putErr = o.sk.Sockets.Put(slot, uint64(fd))
	})
	if err == nil {
		err = putErr
	}
	if err != nil {
		return fmt.Errorf("loader: register the %s socket for sk_lookup: %w", s, err)
	}
	return nil
}

// RegisterProxySocket is RegisterSocket for the proxy's listener.
func (o *Objects) RegisterProxySocket(c syscall.Conn) error { return o.RegisterSocket(ServiceProxy, c) }

// Registered reports whether c is the socket registered for s: false once
// another agent has registered its own.
func (o *Objects) Registered(s Service, c syscall.Conn) (bool, error) {
	var ok bool
	var lookErr error
	err := control(c, func(fd int) {
		slot, err := socketSlot(s, fd)
		if err != nil {
			lookErr = err
			return
		}
		cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		if err != nil {
			lookErr = err
			return
		}
		// A SOCKMAP lookup from userspace returns the socket's cookie.
		var have uint64
		if err := o.sk.Sockets.Lookup(slot, &have); err != nil {
			if !errors.Is(err, ebpf.ErrKeyNotExist) {
				lookErr = err
			}
			return
		}
		ok = have == cookie
	})
	if err == nil {
		err = lookErr
	}
	if err != nil {
		return false, fmt.Errorf("loader: %s socket registration: %w", s, err)
	}
	return ok, nil
}

func control(c syscall.Conn, f func(fd int)) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return raw.Control(func(fd uintptr) { f(int(fd)) })
}

// socketSlot is the SOCKMAP slot of a service's socket by its family; it
// refuses what the SOCKMAP cannot hold, in words.
func socketSlot(s Service, fd int) (uint32, error) {
	if s >= numServices {
		return 0, fmt.Errorf("no service %d", s)
	}
	if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_MPTCP {
		return 0, errors.New("the listener is an MPTCP socket (Go's default for listeners since 1.24), which a SOCKMAP cannot hold: create it with loader.ListenConfig()")
	}
	slot := 2 * uint32(s)
	if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom == unix.AF_INET6 {
		slot++
	}
	return slot, nil
}
