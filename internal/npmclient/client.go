// Package npmclient is the client side of the seed's CLI: `regedge install`
// resolves packages through an edge (or any registry) with the config
// headers and a token, verifies every tarball's integrity and installs the
// packages and their production dependencies into node_modules, staged and
// renamed into place at the end; `regedge publish` packs a directory as npm
// does and publishes it.
package npmclient

import (
	"context"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/Masterminds/semver/v3"
	"github.com/regedge/regedge/internal/codec"
)

// Client talks to a registry (and the scoped registries of an .npmrc).
// Credentials and the config headers go only where they belong: see
// decorate.
type Client struct {
	Registry *url.URL
	Scopes   map[string]*url.URL // "@scope" -> the registry of its packages (.npmrc @scope:registry=)
	Token    string              // sent as Authorization: Bearer to URLs within Registry only
	// AuthTokens are .npmrc tokens by their key without ":_authToken"
	// ("//host[:port]/path/"), sent where npm sends them (the key walked up
	// from the request's URL).
	AuthTokens map[string]string
	State      codec.State // sent as the X-Bun-* config headers, to URLs within the request's registry only
	HTTP       *http.Client
	Verbose    io.Writer // when set, the headers of every request are printed here
	// Progress, when set, is told of each download (total is -1 when the
	// registry does not say) and returns what to call with each chunk.
	Progress func(label string, total int64) func(n int64)

	httpOnce sync.Once
	http     *http.Client
}

// Version is one version of a packument.
type Version struct {
	Name                 string            `json:"name"`
	Version              string            `json:"version"`
	Dependencies         map[string]string `json:"dependencies"`
	OptionalDependencies map[string]string `json:"optionalDependencies"`
	BundleDependencies   bundled           `json:"bundleDependencies"`
	BundledDependencies  bundled           `json:"bundledDependencies"`
	OS                   stringList        `json:"os"`
	CPU                  stringList        `json:"cpu"`
	Deprecated           string            `json:"deprecated"`
	Dist                 struct {
		Tarball   string `json:"tarball"`
		Integrity string `json:"integrity"`
		Shasum    string `json:"shasum"`
	} `json:"dist"`

	registry *url.URL // the registry whose packument listed this version
}

// Packument is a package's metadata document.
type Packument struct {
	Name     string              `json:"name"`
	DistTags map[string]string   `json:"dist-tags"`
	Versions map[string]*Version `json:"versions"`
}

// ErrNotFound is a package the registry does not have.
var ErrNotFound = errors.New("not found")

// RegistryFor is the registry of a package: its scope's, else the default.
func (c *Client) RegistryFor(name string) *url.URL {
	if strings.HasPrefix(name, "@") {
		if scope, _, ok := strings.Cut(name, "/"); ok {
			if r := c.Scopes[scope]; r != nil {
				return r
			}
		}
	}
	return c.Registry
}

type registryKey struct{}

// newRequest is a request to u made for the registry reg, with the
// headers decorate allows.
func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader, reg *url.URL) (*http.Request, error) {
	req, err := http.NewRequestWithContext(context.WithValue(ctx, registryKey{}, reg), method, u, body)
	if err != nil {
		return nil, err
	}
	c.decorate(req.Header, reg, req.URL)
	req.Header.Set("User-Agent", "regedge")
	return req, nil
}

// decorate adds to h what a request for the registry reg may carry to u:
// the config headers (and request ID) only within reg (scheme, host, port,
// path prefix); a token per tokenFor.
func (c *Client) decorate(h http.Header, reg, u *url.URL) {
	if within(reg, u) {
		for name, v := range codec.NewHeaderBlock(c.State).All() {
			h[name] = v
		}
		h.Set(codec.HeaderRequestID, codec.NewRequestID())
	}
	if tok := c.tokenFor(reg, u); tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
}

// tokenFor is the token a request for reg may send to u: the --token /
// REGEDGE_TOKEN token within the default registry only; else the .npmrc
// token whose key matches u as npm matches it. Never over plain http when
// reg is https, never to a path with dot segments.
func (c *Client) tokenFor(reg, u *url.URL) string {
	if reg == nil || u == nil || (strings.EqualFold(reg.Scheme, "https") && !strings.EqualFold(u.Scheme, "https")) {
		return ""
	}
	if c.Token != "" && within(c.Registry, u) {
		return c.Token
	}
	return npmrcToken(c.AuthTokens, u)
}

// client is c.HTTP with a redirect check that strips the token and config
// headers Go would carry to the new URL, and puts back only what decorate
// allows there.
func (c *Client) client() *http.Client {
	c.httpOnce.Do(func() {
		hc := http.Client{}
		if c.HTTP != nil {
			hc = *c.HTTP
		}
		prev := hc.CheckRedirect
		hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if prev != nil {
				if err := prev(req, via); err != nil {
					return err
				}
			}
			for k := range req.Header {
				if k == "Authorization" || strings.HasPrefix(k, "X-Bun-") {
					delete(req.Header, k)
				}
			}
			if reg, _ := req.Context().Value(registryKey{}).(*url.URL); reg != nil && within(reg, req.URL) {
				c.decorate(req.Header, reg, req.URL)
			}
			if c.Verbose != nil {
				fmt.Fprintf(c.Verbose, "> redirected to %s (token sent: %t)\n", req.URL, req.Header.Get("Authorization") != "")
			}
			return nil
		}
		c.http = &hc
	})
	return c.http
}

func (c *Client) do(req *http.Request) (*http.Response, error) {
	if c.Verbose != nil {
		fmt.Fprintf(c.Verbose, "> %s %s\n", req.Method, req.URL)
		for _, k := range []string{codec.HeaderConfigVersion, codec.HeaderRegistryHash, codec.HeaderFeatureFlags,
			codec.HeaderTerminalMode, codec.HeaderTerminalRows, codec.HeaderTerminalCols, codec.HeaderConfigDump, codec.HeaderRequestID} {
			if v := req.Header.Get(k); v != "" {
				fmt.Fprintf(c.Verbose, ">   %s: %s\n", k, v)
			}
		}
		if req.Header.Get("Authorization") != "" {
			fmt.Fprintf(c.Verbose, ">   Authorization: Bearer <token>\n")
		}
	}
	return c.client().Do(req)
}

// Packument fetches a package's (abbreviated) metadata from its registry.
func (c *Client) Packument(ctx context.Context, name string) (*Packument, error) {
	reg := c.RegistryFor(name)
	u := strings.TrimSuffix(reg.String(), "/") + "/" + strings.Replace(name, "/", "%2f", 1)
	req, err := c.newRequest(ctx, http.MethodGet, u, nil, reg)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8")
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: registry answered %s: %s", name, resp.Status, strings.TrimSpace(string(b)))
	}
	var p Packument
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&p); err != nil {
		return nil, fmt.Errorf("%s: packument: %w", name, err)
	}
	// The document speaks for the package asked for: a version is known by
	// its key, which must be a semver version (it may end up in
	// package.json), and any name it claims is not used.
	for k, v := range p.Versions {
		if sv, err := semver.StrictNewVersion(k); v == nil || err != nil || sv.String() != k {
			delete(p.Versions, k)
			continue
		}
		v.Name, v.Version, v.registry = name, k, reg
	}
	p.Name = name
	return &p, nil
}

// Tarball downloads a version's tarball and checks its integrity (sha512
// SRI, or sha1 shasum where that is all there is) before returning it.
func (c *Client) Tarball(ctx context.Context, v *Version) ([]byte, error) {
	reg := v.registry
	if reg == nil {
		reg = c.RegistryFor(v.Name)
	}
	req, err := c.newRequest(ctx, http.MethodGet, v.Dist.Tarball, nil, reg)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s@%s: tarball: registry answered %s", v.Name, v.Version, resp.Status)
	}
	var progress func(int64)
	if c.Progress != nil {
		progress = c.Progress(v.Name+"@"+v.Version, resp.ContentLength)
	}
	var h hash.Hash
	var want string
	switch {
	case strings.HasPrefix(v.Dist.Integrity, "sha512-"):
		h, want = sha512.New(), v.Dist.Integrity
	case v.Dist.Shasum != "":
		h, want = sha1.New(), v.Dist.Shasum
	default:
		return nil, fmt.Errorf("%s@%s: the registry gives no integrity to check the tarball against", v.Name, v.Version)
	}
	var buf []byte
	chunk := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(chunk)
		buf = append(buf, chunk[:n]...)
		h.Write(chunk[:n])
		if progress != nil && n > 0 {
			progress(int64(n))
		}
		if int64(len(buf)) > MaxPackageSize {
			return nil, fmt.Errorf("%s@%s: tarball over %d bytes", v.Name, v.Version, MaxPackageSize)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	sum := h.Sum(nil)
	got := hex.EncodeToString(sum)
	if strings.HasPrefix(want, "sha512-") {
		got = "sha512-" + base64.StdEncoding.EncodeToString(sum)
	}
	if got != want {
		return nil, fmt.Errorf("%s@%s: integrity check failed: want %s, got %s", v.Name, v.Version, want, got)
	}
	return buf, nil
}
