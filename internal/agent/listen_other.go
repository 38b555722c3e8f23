//go:build !linux

package agent

import (
	"net"
	"syscall"
	"time"
)

// waitAcceptQueueEmpty has nothing to wait for off Linux: there is no
// kernel datapath, so no handover (agent.steered is false).
func waitAcceptQueueEmpty(net.Listener, time.Duration) {}

// reusePort is never used off Linux: listeners are set up for it only when
// steered, which needs the kernel datapath.
func reusePort(string, string, syscall.RawConn) error { return nil }
