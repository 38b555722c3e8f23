//go:build linux

package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// serveGoProxy is the "goproxy" subcommand, the baseline of what Go's
// standard library costs for the same job: httputil.ReverseProxy with a
// pooled keep-alive transport, rewriting packuments as nginx's sub_filter
// does (the origin's base replaced by the edge's, from the request's Host,
// in the whole body). It holds each packument in memory to do so, so it is
// run on the small packument only. No token check. It serves on the
// listener passed as file descriptor 3.
func serveGoProxy(originBase string) error {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	u, err := url.Parse(originBase)
	if err != nil {
		return err
	}
	from := []byte(originBase)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			// Plain bodies to rewrite, as nginx's
			// proxy_set_header Accept-Encoding "".
			pr.Out.Header.Del("Accept-Encoding")
		},
		Transport: &http.Transport{
			MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
			DisableCompression: true, ResponseHeaderTimeout: 30 * time.Second,
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			body = bytes.ReplaceAll(body, from, []byte("http://"+resp.Request.Host+"/"))
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			resp.Header.Del("Etag")
			return nil
		},
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	return srv.Serve(ln)
}
