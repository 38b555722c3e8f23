package npmclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// PublishDoc builds the document npm PUTs to publish one version: the
// manifest with _id and dist, the dist-tag, and the tarball attached in
// base64.
func (c *Client) PublishDoc(p *Packed, tag string) ([]byte, error) {
	if tag == "" {
		tag = "latest"
	}
	base := p.Name
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	file := base + "-" + p.Version + ".tgz"
	version := map[string]any{}
	for k, v := range p.Manifest {
		version[k] = v
	}
	version["_id"] = p.Name + "@" + p.Version
	version["dist"] = map[string]any{
		"integrity": p.Integrity,
		"shasum":    p.Shasum,
		"tarball":   strings.TrimSuffix(c.RegistryFor(p.Name).String(), "/") + "/" + p.Name + "/-/" + file,
	}
	doc := map[string]any{
		"_id":         p.Name,
		"name":        p.Name,
		"description": p.Manifest["description"],
		"dist-tags":   map[string]string{tag: p.Version},
		"versions":    map[string]any{p.Version: version},
		"access":      nil,
		"_attachments": map[string]any{file: map[string]any{
			"content_type": "application/octet-stream",
			"data":         base64.StdEncoding.EncodeToString(p.Tarball),
			"length":       len(p.Tarball),
		}},
	}
	return json.Marshal(doc)
}

// Publish PUTs p to the registry under tag (default latest).
func (c *Client) Publish(ctx context.Context, p *Packed, tag string) error {
	body, err := c.PublishDoc(p, tag)
	if err != nil {
		return err
	}
	reg := c.RegistryFor(p.Name)
	u := strings.TrimSuffix(reg.String(), "/") + "/" + strings.Replace(p.Name, "/", "%2f", 1)
	req, err := c.newRequest(ctx, http.MethodPut, u, bytes.NewReader(body), reg)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("publish %s@%s: registry answered %s: %s", p.Name, p.Version, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}
