package userproxy

import (
	"net/netip"
	"strings"
)

// The request's Host becomes the base of the tarball URLs in the
// packuments the edge serves (unless proxy.publicURL is set). net/http
// (golang.org/x/net/http/httpguts.ValidHostHeader, which the fast path uses
// to decide what to hand on) accepts any byte that may appear in a URI
// host, sub-delims included; a packument must never carry "http://a'b/..."
// or "http://evil.example;x=1/...", so the checks refuse (400) a Host that
// is not plainly host[:port].

// plainHost reports whether h is host[:port]: host a DNS name (letters,
// digits, '-', '_', '.') or an IP literal ("[v6]" in brackets, without a
// zone), port 1 to 5 digits up to 65535.
func plainHost(h string) bool {
	host, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		host, port = "", h[end+1:]
		if port != "" {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
			if port == "" {
				return false
			}
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		if port == "" {
			return false
		}
	}
	if port != "" {
		if len(port) > 5 {
			return false
		}
		n := 0
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
			n = n*10 + int(port[i]-'0')
		}
		if n == 0 || n > 65535 {
			return false
		}
	}
	if strings.HasPrefix(h, "[") {
		return true
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// badHost is the 400 body for a Host the edge cannot build URLs on (the
// value itself is never echoed).
func badHost() apiError {
	return apiError{Error: "Invalid Host header", Header: "Host", Rule: "want host[:port]: a DNS name or an IP literal (or set proxy.publicURL)"}
}
