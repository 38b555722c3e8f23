package loader

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
)

// TagSocket tells the kernel that the traffic of the connection c (an
// accepted proxy connection: a *net.TCPConn, or what a TLS connection
// wraps) now belongs to registry hash: TC counts the connection's packets
// and bytes under it (bpf/include/sockacct.h). The proxy calls it for each
// request whose hash differs from the connection's last one, before it
// writes the response. One map update with the socket's fd as key.
func (o *Objects) TagSocket(c syscall.Conn, hash uint32) error {
	v := tcSockRegistry{Hash: hash, Flags: sockTagged}
	return o.withSocket(c, "tag", func(fd uint32) error {
		return o.tc.SockRegistry.Put(fd, &v)
	})
}

// UntagSocket takes c's hash away: until the next TagSocket its traffic is
// held, not counted (a request whose hash is unknown: malformed headers).
func (o *Objects) UntagSocket(c syscall.Conn) error {
	return o.withSocket(c, "untag", func(fd uint32) error {
		if err := o.tc.SockRegistry.Delete(fd); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return nil
	})
}

// sockTagged is SOCK_TAGGED: the hash field is set.
const sockTagged = 1

func (o *Objects) withSocket(c syscall.Conn, what string, f func(fd uint32) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("loader: %s socket: %w", what, err)
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(uint32(fd)) }); err != nil {
		return fmt.Errorf("loader: %s socket: %w", what, err)
	}
	if ferr != nil {
		return fmt.Errorf("loader: %s socket: sock_registry: %w", what, ferr)
	}
	return nil
}
