package configbus

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

// QueryOptions say how to ask agents for their state.
type QueryOptions struct {
	Sender   codec.State   // the asker's own state, carried in each datagram
	Deadline time.Duration // give up on a target after this long (default 3 s)
	Retry    time.Duration // wait for an answer before sending again (default 200 ms), doubled per attempt up to 1 s
	// Key, when set, signs every HEARTBEAT (agents with bus.publicKeys
	// answer nothing else).
	Key ed25519.PrivateKey
	Now func() time.Time // the clock of the timestamps (default time.Now)
}

// Query asks every target for its state with a HEARTBEAT (docs/protocol.md
// §3.1: it changes nothing; the answer carries the agent's state), retried
// until an answer or the deadline. Each Result says what the target
// reported (Converged is unused). Any answer an agent sends carries its
// state: an ERROR (the asker's state has a version the agent does not
// accept) reports it as well as a HEARTBEAT does.
func Query(ctx context.Context, targets []string, opts QueryOptions) ([]Result, error) {
	if opts.Deadline <= 0 {
		opts.Deadline = 3 * time.Second
	}
	if opts.Retry <= 0 {
		opts.Retry = 200 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := checkSender(opts.Key, opts.Sender); err != nil {
		return nil, err
	}
	return eachTarget(targets, func(conn *net.UDPConn, to netip.AddrPort, res *Result) {
		queryOne(ctx, conn, to, opts, res)
	}), nil
}

func queryOne(ctx context.Context, conn *net.UDPConn, to netip.AddrPort, opts QueryOptions, res *Result) {
	deadline := time.Now().Add(opts.Deadline)
	wait := opts.Retry
	buf := make([]byte, 2048)
	all := allVersions()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		res.Attempts++
		hb := codec.Heartbeat(opts.Now().UnixMilli())
		pkt := codec.AppendDatagram(nil, opts.Sender, &hb)
		if opts.Key != nil {
			pkt = codec.AppendSigned(nil, pkt, uint64(opts.Now().UnixMilli()), opts.Key)
		}
		if _, err := conn.WriteToUDPAddrPort(pkt, to); err != nil {
			res.Err = "send: " + err.Error()
		}
		until := time.Now().Add(wait)
		if until.After(deadline) {
			until = deadline
		}
		conn.SetReadDeadline(until)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if isTimeout(err) {
					res.Err = fmt.Sprintf("no answer within %v", wait)
				} else {
					res.Err = "receive: " + err.Error()
				}
				break
			}
			if from.Addr().Unmap() != to.Addr().Unmap() || from.Port() != to.Port() {
				continue
			}
			var d codec.Datagram
			if err := codec.DecodeDatagramInto(&d, buf[:n], &all); err != nil {
				res.Err = "bad answer: " + err.Error()
				continue
			}
			res.Reported, res.HasReport, res.Err = d.Sender, true, ""
			if d.Frame.Type == codec.TypeError {
				res.Err = fmt.Sprintf("ERROR %d %q (the state is the agent's all the same)", d.Frame.Field, d.Frame.ErrorMessage())
			}
			return
		}
		if wait *= 2; wait > time.Second {
			wait = time.Second
		}
	}
}
