package userproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Under an upstream's TLS layer. Both upstream pools decide whether an
// idle connection has bytes nobody asked for by peeking at the socket.
// Over TLS that peek only sees what the TLS layer has not read yet, and
// crypto/tls reads whatever the socket holds when it needs a record: a
// stray record (or the first part of one) that arrived in the same
// segment as a response's last record would sit in the TLS layer's
// buffer, out of the peek's sight, and be read as the next request's
// answer. recordConn keeps the TLS layer from reading past the record it
// needs, so such bytes stay in the socket.

// tlsRecordHeader is the length of a TLS record's header (type, version,
// length: RFC 8446 §5.1, the same in TLS 1.2).
const tlsRecordHeader = 5

// recordConn is the TCP connection under an upstream's TLS client. Each
// read returns at most the rest of the current record's header, or of its
// body, so the TLS layer never takes bytes of a record it has not asked
// for (for it, a short read is an ordinary one).
type recordConn struct {
	net.Conn
	hdr  [tlsRecordHeader]byte
	nhdr int // header bytes read of the next record
	left int // body bytes of the current record not read yet
	// mid: the TLS layer holds part of a record; after a response's
	// last record, that is a stray record's first bytes.
	mid atomic.Bool
	// free: HTTP/2 was negotiated; its framing needs none of this.
	free bool
}

func (c *recordConn) Read(p []byte) (int, error) {
	if c.free {
		return c.Conn.Read(p)
	}
	if c.left == 0 {
		if want := tlsRecordHeader - c.nhdr; len(p) > want {
			p = p[:want]
		}
		n, err := c.Conn.Read(p)
		copy(c.hdr[c.nhdr:], p[:n])
		if c.nhdr += n; c.nhdr == tlsRecordHeader {
			c.nhdr, c.left = 0, int(c.hdr[3])<<8|int(c.hdr[4])
		}
		c.mid.Store(c.nhdr > 0 || c.left > 0)
		return n, err
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= n
	c.mid.Store(c.left > 0)
	return n, err
}

// SyscallConn is the socket's, for peeking at it.
func (c *recordConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// midRecord reports whether the TLS layer holds part of a record.
func (c *recordConn) midRecord() bool { return c.mid.Load() }

// wholeReadsTLS turns recordConn off (the TLS layer reads the socket as
// it likes): only for BenchmarkUpstreamTLS, which measures what reading
// record by record costs against that, in one run.
var wholeReadsTLS bool

// dialRecordTLS dials a TLS client connection over a recordConn.
func dialRecordTLS(ctx context.Context, d *net.Dialer, network, addr string, conf *tls.Config) (*tls.Conn, *recordConn, error) {
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, nil, err
	}
	if wholeReadsTLS {
		tc := tls.Client(raw, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, nil, err
		}
		return tc, nil, nil
	}
	rc := &recordConn{Conn: raw}
	tc := tls.Client(rc, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, nil, err
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		rc.free = true // nothing reads the connection yet
	}
	return tc, rc, nil
}

// tlsHolds reports whether tc's TLS layer holds anything its reader has
// not taken: plaintext of a record already read, a whole record, or part
// of one (rc). Its read deadline is set in the past, so only what is
// already buffered can be returned; a timeout leaves tls.Conn usable. It
// must be called by the connection's only reader, and consumes what it
// finds (the connection is not to be used after true).
func tlsHolds(tc *tls.Conn, rc *recordConn) bool {
	var b [1]byte
	_ = tc.SetReadDeadline(time.Unix(1, 0))
	n, err := tc.Read(b[:])
	_ = tc.SetReadDeadline(time.Time{})
	var ne net.Error
	return n > 0 || (err != nil && !(errors.As(err, &ne) && ne.Timeout())) || (rc != nil && rc.midRecord())
}
