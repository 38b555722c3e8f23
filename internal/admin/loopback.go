package admin

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// LoopbackTrusted reports whether r may change the config without an admin
// token (the admin API and the WebSocket server share this rule): it
// arrived on a loopback address, its Host names the loopback ("localhost",
// a name under .localhost, a loopback IP literal, with any port) or one of
// hosts (configured names, compared case-insensitively), and its Origin,
// when a browser sent one, is on that same host. A page on another site
// whose name was re-pointed at 127.0.0.1 (DNS rebinding) sends its own name
// as Host and is refused.
func LoopbackTrusted(r *http.Request, hosts []string) bool {
	if !OnLoopbackListener(r) || !LoopbackHost(r.Host, hosts) {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // "null" (sandboxed pages, file://) or garbage
	}
	return LoopbackHost(u.Host, hosts) && strings.EqualFold(hostOnly(u.Host), hostOnly(r.Host))
}

// LoopbackHost reports whether a Host value (host[:port]) is a loopback name
// or IP literal (the unspecified address included), or one of hosts.
func LoopbackHost(hostport string, hosts []string) bool {
	h := hostOnly(hostport)
	if h == "" {
		return false
	}
	if a, err := netip.ParseAddr(h); err == nil {
		// 0.0.0.0 and :: as a destination reach this host (a client
		// told the listener's wildcard address); a browser sent there by
		// another site still names that site in Origin, checked apart.
		return a.Unmap().IsLoopback() || a.IsUnspecified()
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	for _, name := range hosts {
		if strings.EqualFold(strings.TrimSuffix(name, "."), h) {
			return true
		}
	}
	return false
}

// hostOnly is the host of host[:port], without the brackets of an IPv6
// literal; "" when it is malformed.
func hostOnly(hostport string) string {
	if hostport == "" {
		return ""
	}
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		return hostport[1 : len(hostport)-1]
	}
	if strings.ContainsAny(hostport, ":[]") {
		return "" // a bare IPv6 address or a malformed port: not a Host value
	}
	return hostport
}
