package configbus

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

// PushOptions say what to push and how hard to try.
type PushOptions struct {
	Sender   codec.State   // the pusher's own state, carried in each datagram
	Entries  []codec.Entry // the fields to set, sent as one BULK frame
	Deadline time.Duration // give up on a target after this long (default 10 s)
	Retry    time.Duration // first wait for an answer (default 200 ms), doubled per attempt
	MaxRetry time.Duration // longest wait between attempts (default 2 s)
	// Key, when set, signs every datagram (docs/protocol.md §3.1a), each
	// attempt with a fresh timestamp: a retry is a new datagram, never a
	// replay, and it stays fresh however long the push runs.
	Key ed25519.PrivateKey
	Now func() time.Time // the clock of the timestamps (default time.Now)
}

// Result is one target's outcome.
type Result struct {
	Target    string
	Attempts  int
	Reported  codec.State // the last state the target reported
	HasReport bool
	Converged bool   // Reported has every pushed field at its pushed value
	Err       string // the last error: an ERROR frame, a timeout, a send failure
}

// Push sends one BULK update to every target and retries each, with
// backoff, until the state it reports holds the pushed values or its
// deadline passes. It returns one Result per target, in order. Sockets are
// opened before Push returns control to goroutines, so a caller inside a
// network namespace sends from it.
func Push(ctx context.Context, targets []string, opts PushOptions) ([]Result, error) {
	if opts.Deadline <= 0 {
		opts.Deadline = 10 * time.Second
	}
	if opts.Retry <= 0 {
		opts.Retry = 200 * time.Millisecond
	}
	if opts.MaxRetry < opts.Retry {
		opts.MaxRetry = 2 * time.Second
		if opts.MaxRetry < opts.Retry {
			opts.MaxRetry = opts.Retry
		}
	}
	frame, err := codec.Bulk(opts.Entries...)
	if err != nil {
		return nil, err
	}
	if err := frame.Check(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := checkSender(opts.Key, opts.Sender); err != nil {
		return nil, err
	}
	dg := codec.AppendDatagram(nil, opts.Sender, &frame)
	return eachTarget(targets, func(conn *net.UDPConn, to netip.AddrPort, res *Result) {
		pushOne(ctx, conn, to, dg, opts, res)
	}), nil
}

// checkSender checks what Push and Query send with: the signing key, when
// there is one, and the sender's own state.
func checkSender(key ed25519.PrivateKey, sender codec.State) error {
	if key != nil && len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("configbus: signing key of %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	if err := sender.Validate(); err != nil {
		return fmt.Errorf("configbus: sender state: %w", err)
	}
	return nil
}

// eachTarget opens a socket per target (here, so that a caller inside a
// network namespace sends from it) and runs one for every target that has
// one, concurrently; it returns the results in order, a target that could
// not be opened with its error.
func eachTarget(targets []string, one func(conn *net.UDPConn, to netip.AddrPort, res *Result)) []Result {
	results, conns, addrs := openTargets(targets)
	var wg sync.WaitGroup
	for i := range targets {
		if conns[i] == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns[i].Close()
			one(conns[i], addrs[i], &results[i])
		}()
	}
	wg.Wait()
	return results
}

// openTargets resolves each target and opens a socket for it; a target
// that fails either has its Err set and no socket.
func openTargets(targets []string) ([]Result, []*net.UDPConn, []netip.AddrPort) {
	results := make([]Result, len(targets))
	conns := make([]*net.UDPConn, len(targets))
	addrs := make([]netip.AddrPort, len(targets))
	for i, t := range targets {
		results[i].Target = t
		ua, err := net.ResolveUDPAddr("udp", t)
		if err != nil {
			results[i].Err = err.Error()
			continue
		}
		addrs[i] = ua.AddrPort()
		// Unconnected: an ICMP error must not make later sends fail.
		network := "udp4"
		if !addrs[i].Addr().Unmap().Is4() {
			network = "udp6"
		}
		if conns[i], err = net.ListenUDP(network, nil); err != nil {
			results[i].Err = err.Error()
		}
	}
	return results, conns, addrs
}

func pushOne(ctx context.Context, conn *net.UDPConn, to netip.AddrPort, dg []byte, opts PushOptions, res *Result) {
	deadline := time.Now().Add(opts.Deadline)
	wait := opts.Retry
	buf := make([]byte, 2048)
	pkt := make([]byte, 0, codec.MaxSignedDatagramSize)
	all := allVersions()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		res.Attempts++
		pkt = append(pkt[:0], dg...)
		if opts.Key != nil {
			pkt = codec.AppendSigned(pkt[:0], dg, uint64(opts.Now().UnixMilli()), opts.Key)
		}
		if _, err := conn.WriteToUDPAddrPort(pkt, to); err != nil {
			res.Err = "send: " + err.Error()
		}
		waitUntil := time.Now().Add(wait)
		if waitUntil.After(deadline) {
			waitUntil = deadline
		}
		// An answer that is not convergence (an ERROR worth retrying, such
		// as 6 storage, or an ACK of a state another writer changed) does
		// not end the wait: the backoff is waited out before the next try,
		// so a disk problem is not hammered with datagrams (and the
		// agent's log with lines) at the speed of the loopback.
		answered := false
		for {
			conn.SetReadDeadline(waitUntil)
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				switch {
				case !isTimeout(err):
					res.Err = "receive: " + err.Error()
				case !answered:
					res.Err = fmt.Sprintf("no answer within %v", wait)
				}
				break
			}
			if from.Addr().Unmap() != to.Addr().Unmap() || from.Port() != to.Port() {
				continue // not our target
			}
			var d codec.Datagram
			if err := codec.DecodeDatagramInto(&d, buf[:n], &all); err != nil {
				res.Err = "bad answer: " + err.Error()
				continue
			}
			res.Reported, res.HasReport = d.Sender, true
			switch d.Frame.Type {
			case codec.TypeAck:
				if holds(d.Sender, opts.Entries) {
					res.Converged, res.Err = true, ""
					return
				}
				res.Err = "acknowledged, but the reported state differs (another writer?)"
				answered = true
			case codec.TypeError:
				res.Err = fmt.Sprintf("ERROR %d %q", d.Frame.Field, d.Frame.ErrorMessage())
				if code := codec.ErrorCode(d.Frame.Field); code == codec.ErrCodeInvalid || code == codec.ErrCodeNotAllowed {
					return // retrying cannot help
				}
				// Anything else, ErrCodeStorage above all (the change was
				// valid; the agent's disk was not), is retried.
				answered = true
			}
		}
		if wait *= 2; wait > opts.MaxRetry {
			wait = opts.MaxRetry
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// holds reports whether s has every entry's field at its value.
func holds(s codec.State, entries []codec.Entry) bool {
	for _, e := range entries {
		if s.Get(e.Field) != e.Value {
			return false
		}
	}
	return true
}

// allVersions accepts any version in an answer: the pusher judges the
// state an agent reports, not whether it would accept it.
func allVersions() codec.VersionSet {
	var vs codec.VersionSet
	for v := 1; v < 256; v++ {
		vs.Add(uint8(v))
	}
	return vs
}
