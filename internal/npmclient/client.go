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

	"github.com/regedge/regedge/internal/codec"
)

// Client talks to one registry.
type Client struct {
	Registry *url.URL
	Token    string      // sent as Authorization: Bearer
	State    codec.State // sent as the X-Bun-* config headers
	HTTP     *http.Client
	Verbose  io.Writer // when set, the headers of every request are printed here
	// Progress, when set, is told of each download (total is -1 when the
	// registry does not say) and returns what to call with each chunk.
	Progress func(label string, total int64) func(n int64)
}

// Version is one version of a packument.
type Version struct {
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Dependencies map[string]string `json:"dependencies"`
	Dist         struct {
		Tarball   string `json:"tarball"`
		Integrity string `json:"integrity"`
		Shasum    string `json:"shasum"`
	} `json:"dist"`
}

// Packument is a package's metadata document.
type Packument struct {
	Name     string              `json:"name"`
	DistTags map[string]string   `json:"dist-tags"`
	Versions map[string]*Version `json:"versions"`
}

// ErrNotFound is a package the registry does not have.
var ErrNotFound = errors.New("not found")

func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for name, v := range codec.NewHeaderBlock(c.State).All() {
		req.Header[name] = v
	}
	req.Header.Set(codec.HeaderRequestID, codec.NewRequestID())
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("User-Agent", "regedge")
	return req, nil
}

func (c *Client) do(req *http.Request) (*http.Response, error) {
	if c.Verbose != nil {
		fmt.Fprintf(c.Verbose, "> %s %s\n", req.Method, req.URL)
		for _, k := range []string{codec.HeaderConfigVersion, codec.HeaderRegistryHash, codec.HeaderFeatureFlags,
			codec.HeaderTerminalMode, codec.HeaderTerminalRows, codec.HeaderTerminalCols, codec.HeaderConfigDump, codec.HeaderRequestID} {
			fmt.Fprintf(c.Verbose, ">   %s: %s\n", k, req.Header.Get(k))
		}
		if req.Header.Get("Authorization") != "" {
			fmt.Fprintf(c.Verbose, ">   Authorization: Bearer <token>\n")
		}
	}
	return c.HTTP.Do(req)
}

// Packument fetches a package's (abbreviated) metadata.
func (c *Client) Packument(ctx context.Context, name string) (*Packument, error) {
	u := strings.TrimSuffix(c.Registry.String(), "/") + "/" + strings.Replace(name, "/", "%2f", 1)
	req, err := c.newRequest(ctx, http.MethodGet, u, nil)
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
	return &p, nil
}

// Tarball downloads a version's tarball and checks its integrity (sha512
// SRI, or sha1 shasum where that is all there is) before returning it.
func (c *Client) Tarball(ctx context.Context, v *Version) ([]byte, error) {
	req, err := c.newRequest(ctx, http.MethodGet, v.Dist.Tarball, nil)
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
