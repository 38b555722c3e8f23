package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

// Client is the one HTTP client of an agent's admin listener, used by every
// command that talks to a running agent (config get and set, cache purge,
// top). Its errors name the agent as the operator gave it and leave out the
// command: the caller says what it was doing.
type Client struct {
	addr  string // as given: "127.0.0.1:9873" or a URL
	base  string // scheme://host:port, no trailing slash
	http  *http.Client
	token string // admin token (scope config:write), "" for none
}

// maxAnswer bounds what the client reads of any answer but /metrics.
const maxAnswer = 1 << 16

// MaxMetrics bounds what the client reads of /metrics.
const MaxMetrics = 16 << 20

// NewClient returns a client of the admin listener at addr (HOST:PORT, or
// a URL such as https://edge:9873); every request gives up after timeout.
func NewClient(addr string, timeout time.Duration) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{addr: addr, base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: timeout}}
}

// Addr is the agent's address as it was given.
func (c *Client) Addr() string { return c.addr }

// SetToken makes every request carry tok as an admin token (Authorization:
// Bearer): an admin listener off loopback takes writes, and the support
// bundle's reads, only with one (scope config:write).
func (c *Client) SetToken(tok string) { c.token = tok }

func (c *Client) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.http.Do(req)
}

// tokenHint says what to do about a 401 or 403.
func (c *Client) tokenHint(resp *http.Response) string {
	switch {
	case resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden:
		return ""
	case c.token == "":
		return " (off loopback the agent wants an admin token: --token T or REGEDGE_ADMIN_TOKEN; regedge token issue --scope config:write)"
	}
	return " (the token was refused: it needs scope config:write and a key in the agent's tokens.publicKeys)"
}

// Get is GET path, whatever the status: the body (at most MaxMetrics
// bytes) and the status code; an error for a status outside okCodes
// (none given: any status).
func (c *Client) Get(ctx context.Context, path string, okCodes ...int) ([]byte, int, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxMetrics))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%s: %w", c.addr, err)
	}
	if len(okCodes) > 0 && !slices.Contains(okCodes, resp.StatusCode) {
		return b, resp.StatusCode, fmt.Errorf("%s answered %s: %s%s", c.addr, resp.Status, strings.TrimSpace(string(b)), c.tokenHint(resp))
	}
	return b, resp.StatusCode, nil
}

// State is GET /api/config: the agent's state.
func (c *Client) State(ctx context.Context) (codec.State, error) {
	resp, err := c.do(ctx, http.MethodGet, "/api/config", nil)
	if err != nil {
		return codec.State{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return codec.State{}, fmt.Errorf("%s answered %s", c.addr, resp.Status)
	}
	var body apiConfig
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(&body); err != nil {
		return codec.State{}, fmt.Errorf("%s: %w", c.addr, err)
	}
	return codec.ParseDump(body.Dump)
}

// SetField is PUT /api/config {"set":{field:value}}: it changes one field
// of the agent's state and returns the new dump. The value travels as text;
// the agent reads numbers and "0x…".
func (c *Client) SetField(ctx context.Context, field, value string) (string, error) {
	body, err := json.Marshal(map[string]map[string]string{"set": {field: value}})
	if err != nil {
		return "", err
	}
	resp, err := c.do(ctx, http.MethodPut, "/api/config", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		apiError
		Dump string `json:"dump"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(&out); err != nil {
		return "", fmt.Errorf("%s answered %s", c.addr, resp.Status)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return out.Dump, nil
	case http.StatusInsufficientStorage:
		// Not a refusal: the change was valid and nothing changed; the
		// agent's disk is the problem, and the same request can be retried.
		return "", fmt.Errorf("%s could not persist the change (%s), nothing changed; fix its state directory and retry: %s", c.addr, resp.Status, out.Error)
	}
	return "", fmt.Errorf("%s refused (%s): %s%s", c.addr, resp.Status, strings.TrimSpace(strings.Join([]string{out.Error, out.Field, out.Rule}, " ")), c.tokenHint(resp))
}

// PurgeCache is DELETE /api/cache/PKG[?version=V]: it drops what the
// agent's edge cache holds of a package (or of one version) and returns how
// many entries went.
func (c *Client) PurgeCache(ctx context.Context, pkg, version string) (int, error) {
	path := "/api/cache/" + pkg
	if version != "" {
		path += "?version=" + url.QueryEscape(version)
	}
	resp, err := c.do(ctx, http.MethodDelete, path, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		apiError
		Purged int `json:"purged"`
	}
	decodeErr := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s answered %s: %s%s", c.addr, resp.Status, out.Error, c.tokenHint(resp))
	}
	if decodeErr != nil {
		return 0, fmt.Errorf("%s answered 200 without a JSON body: %w", c.addr, decodeErr)
	}
	return out.Purged, nil
}

// Metrics is GET /metrics: the agent's Prometheus text, at most
// MaxMetrics bytes of it.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", c.addr, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, MaxMetrics))
}
