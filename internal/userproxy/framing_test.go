package userproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestFramingConnRefusesStrayBytes drives framingConn over a real TCP
// connection through one exchange, then has the peer send bytes nobody
// asked for: an idle read fails without taking them, a request's body is
// refused before it is read (fitForBody), and its first write fails with
// nothing sent, so that the request can go again on another connection.
func TestFramingConnRefusesStrayBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fc := newFramingConn(raw, nil)
	defer fc.Close()
	peer := <-accepted
	defer peer.Close()
	peer.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang detector

	req := "GET /a HTTP/1.1\r\nHost: up\r\n\r\n"
	fc.arm(http.MethodGet)
	if _, err := io.WriteString(fc, req); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(req))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	io.WriteString(peer, resp)
	buf := make([]byte, 4096)
	n, err := io.ReadAtLeast(fc, buf, len(resp))
	if err != nil || string(buf[:n]) != resp {
		t.Fatalf("the response: %q %v", buf[:n], err)
	}

	stray := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	io.WriteString(peer, stray)
	// The idle read fails once the bytes are there, and leaves them.
	if n, err := fc.Read(buf); n != 0 || !errors.Is(err, errStrayBytes) {
		t.Fatalf("an idle read with stray bytes waiting: %d %v, want errStrayBytes", n, err)
	}
	fc.mu.Lock()
	left := fc.pending()
	fc.mu.Unlock()
	if !left {
		t.Fatal("the idle read took the stray bytes")
	}
	// The next request that is given it fails before its body is read or
	// anything is written.
	fc.arm(http.MethodPut)
	if err := fc.fitForBody(); !errors.Is(err, errUnfitConn) {
		t.Fatalf("fitForBody: %v, want errUnfitConn", err)
	}
	if n, err := io.WriteString(fc, "PUT /b HTTP/1.1\r\n"); n != 0 || !errors.Is(err, errUnfitConn) {
		t.Fatalf("a write: %d %v, want nothing written and errUnfitConn", n, err)
	}
	fc.Close()
	rest, _ := io.ReadAll(peer)
	if len(rest) != 0 {
		t.Fatalf("the peer received %q after the stray bytes", rest)
	}
}

// TestFramingConnCutsBytesPastTheResponse: bytes read together with the
// end of a response are not returned, and the connection fails after it.
func TestFramingConnCutsBytesPastTheResponse(t *testing.T) {
	a, b := tcpPair(t)
	fc := newFramingConn(a, nil)
	fc.arm(http.MethodGet)
	io.WriteString(fc, "GET /a HTTP/1.1\r\nHost: up\r\n\r\n")
	resp := "HTTP/1.1 304 Not Modified\r\n\r\n"
	io.WriteString(b, resp+"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
	b.Close() // so that one read can take both
	var got bytes.Buffer
	_, err := io.Copy(&got, fc)
	if got.String() != resp || !errors.Is(err, errStrayBytes) {
		t.Fatalf("read %q, %v; want just the 304, then errStrayBytes", got.String(), err)
	}
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// TestFramingConnReusedWhileIdleReadWaits: as in http.Transport, one
// goroutine reads the connection all along (between responses it waits in
// an idle read) while requests are written from others; a request's write
// must not wait for that idle read (both once held the descriptor's read
// lock: a deadlock), and each response reaches the reader whole.
func TestFramingConnReusedWhileIdleReadWaits(t *testing.T) {
	a, b := tcpPair(t)
	fc := newFramingConn(a, nil)
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	responses := make(chan string)
	go func() { // the read loop
		buf := make([]byte, 4096)
		for {
			n, err := io.ReadAtLeast(fc, buf, len(resp))
			if err != nil {
				close(responses)
				return
			}
			responses <- string(buf[:n])
		}
	}()
	go func() { // the upstream
		br := bufio.NewReader(b)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(b, resp)
		}
	}()
	for i := 0; i < 200; i++ {
		fc.arm(http.MethodGet)
		written := make(chan error, 1)
		go func() { _, err := io.WriteString(fc, "GET /x HTTP/1.1\r\nHost: up\r\n\r\n"); written <- err }()
		select {
		case err := <-written:
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		case <-time.After(10 * time.Second): // a hang detector
			t.Fatalf("request %d: the write waited for the idle read", i)
		}
		if got := <-responses; got != resp {
			t.Fatalf("response %d: %q", i, got)
		}
	}
	fc.Close()
}

// TestFramingConnBodyAfterAnEarlyAnswer: an upstream may answer a request
// before its body is sent (a 401 or 417 to "Expect: 100-continue", a 413
// to the head alone); http.Transport then still writes the body, to keep
// the connection. Those writes are the tail of a request whose response
// has ended, not a new request: the connection stays idle, and bytes the
// upstream sends after it are stray (not taken as a response nobody will
// ever read, which would leave the transport's idle read consuming again).
func TestFramingConnBodyAfterAnEarlyAnswer(t *testing.T) {
	a, b := tcpPair(t)
	fc := newFramingConn(a, nil)
	b.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang detector
	const head = "PUT /-/package/x/dist-tags/latest HTTP/1.1\r\nHost: up\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n"
	fc.arm(http.MethodPut)
	if _, err := io.WriteString(fc, head); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(head))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	const early = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno"
	io.WriteString(b, early)
	buf := make([]byte, 4096)
	if n, err := io.ReadAtLeast(fc, buf, len(early)); err != nil || string(buf[:n]) != early {
		t.Fatalf("the early answer: %q %v", buf[:n], err)
	}
	// The transport sends the body after all.
	if _, err := io.WriteString(fc, `"1.0.0"`); err != nil {
		t.Fatalf("the body after the answer: %v", err)
	}
	if _, err := io.ReadFull(b, got[:7]); err != nil {
		t.Fatal(err)
	}
	io.WriteString(b, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
	if n, err := fc.Read(buf); n != 0 || !errors.Is(err, errStrayBytes) {
		t.Fatalf("an idle read after the body: %d %q %v, want nothing and errStrayBytes", n, buf[:n], err)
	}
	fc.mu.Lock()
	left := fc.pending()
	fc.mu.Unlock()
	if !left {
		t.Fatal("the idle read took the stray bytes")
	}
}
