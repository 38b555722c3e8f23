package npmclient

import (
	"net"
	"net/url"
	"strings"
)

// portOf is u's port, or its scheme's default when it has none, so that
// http://h/ and http://h:80/ are one origin.
func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// within says whether u is at or under base: the same scheme, host and
// port, and a path under base's path (as a directory: /npm/ covers
// /npm/x, not /npmx). A URL with user info or dot segments never counts: a
// server could resolve /npm/../admin out of the prefix.
func within(base, u *url.URL) bool {
	if base == nil || u == nil || u.User != nil || u.Opaque != "" {
		return false
	}
	if !strings.EqualFold(base.Scheme, u.Scheme) || !strings.EqualFold(base.Hostname(), u.Hostname()) || portOf(base) != portOf(u) {
		return false
	}
	if hasDotSegment(u) {
		return false
	}
	prefix := base.EscapedPath()
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	return strings.HasPrefix(p, prefix) || p+"/" == prefix
}

// hasDotSegment says whether u's path, with its escapes decoded and either
// slash taken as a separator, has a "." or ".." segment.
func hasDotSegment(u *url.URL) bool {
	p, err := url.PathUnescape(u.EscapedPath())
	if err != nil {
		return true
	}
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// nerfHost is u's host as npm writes it in an .npmrc key: lower case, the
// port only when it is not the scheme's default.
func nerfHost(u *url.URL) string {
	h := strings.ToLower(u.Hostname())
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if p := u.Port(); p != "" && p != portOf(&url.URL{Scheme: u.Scheme}) {
		h = net.JoinHostPort(strings.Trim(h, "[]"), p)
	}
	return h
}

// npmrcToken finds the .npmrc token for u as npm-registry-fetch does: the
// key "//host[:port]/full/path" is tried, then shortened by its last
// segment or its trailing slash, down to "//host[:port]".
func npmrcToken(tokens map[string]string, u *url.URL) string {
	if len(tokens) == 0 || u.User != nil || hasDotSegment(u) {
		return ""
	}
	key := "//" + nerfHost(u) + u.EscapedPath()
	for len(key) > len("//") {
		if t, ok := tokens[key]; ok && t != "" {
			return t
		}
		if strings.HasSuffix(key, "/") {
			key = key[:len(key)-1]
		} else {
			key = key[:strings.LastIndexByte(key, '/')+1]
		}
	}
	return ""
}
