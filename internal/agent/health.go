package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/userproxy"
)

// selfProbeTTL: /readyz and /health asked often (a kubelet, a load
// balancer, an operator's watch) share one probe a second.
const selfProbeTTL = time.Second

// selfProbeTimeout bounds the probe: a proxy that takes longer to answer
// its own listener cannot serve.
const selfProbeTimeout = 2 * time.Second

// selfProbe is the last result of asking the proxy through its listener.
type selfProbe struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

// probeProxy asks the proxy, through its own listener, for
// userproxy.SelfProbePath: the accept loop, a connection and an answer,
// what a client needs.
func (a *Agent) probeProxy(ctx context.Context) error {
	p := &a.selfProbe
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < selfProbeTTL {
		return p.err
	}
	p.err = a.askProxy(ctx)
	p.at = time.Now()
	return p.err
}

func (a *Agent) askProxy(ctx context.Context) error {
	if a.proxyLn == nil {
		return errors.New("the proxy is not listening")
	}
	addr := a.proxyLn.Addr().(*net.TCPAddr)
	ip := addr.IP
	switch {
	case ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	case ip.Equal(net.IPv6unspecified):
		ip = net.IPv6loopback
	}
	scheme := "http"
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if a.certs != nil {
		// The certificate names the edge's public name, not a loopback
		// address: what is checked here is that the listener answers.
		scheme, tr.TLSClientConfig = "https", &tls.Config{InsecureSkipVerify: true} //nolint:gosec
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, selfProbeTimeout)
	defer cancel()
	u := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(ip.String(), fmt.Sprint(addr.Port)), userproxy.SelfProbePath)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("no answer through its own listener: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("its own listener answered %s", resp.Status)
	}
	return nil
}

// Subsystems reports each part of the agent (admin.Status).
func (a *Agent) Subsystems(ctx context.Context) admin.Subsystems {
	return admin.Subsystems{
		Proxy:       a.proxyHealth(ctx),
		Upstreams:   a.upstreamsHealth(),
		Cache:       a.cacheHealth(),
		Kernel:      a.kernelHealth(),
		ConfigPlane: a.configPlaneHealth(),
	}
}

func (a *Agent) proxyHealth(ctx context.Context) admin.Subsystem {
	info := map[string]any{"fastPath": a.cfg.Proxy.FastPath, "tls": a.certs != nil}
	if a.proxyLn != nil {
		info["listen"] = a.proxyLn.Addr().String()
	}
	if err := a.probeProxy(ctx); err != nil {
		return admin.Subsystem{Status: admin.StatusFailed, Detail: err.Error(), Info: info}
	}
	return admin.Subsystem{Status: admin.StatusOK, Detail: "answers through its own listener", Info: info}
}

func (a *Agent) upstreamsHealth() admin.Subsystem {
	ups := a.proxy.Upstreams()
	var down []string
	for _, u := range ups {
		if !u.Available {
			down = append(down, fmt.Sprintf("%s (breaker %s)", u.Name, u.Breaker))
		}
	}
	s := admin.Subsystem{Status: admin.StatusOK, Info: ups}
	switch {
	case len(ups) == 0:
		s.Status, s.Detail = admin.StatusFailed, "no upstreams configured (proxy.upstreams)"
	case len(down) == len(ups):
		s.Status, s.Detail = admin.StatusFailed, fmt.Sprintf("every upstream is unavailable: %v", down)
	case len(down) > 0:
		s.Status, s.Detail = admin.StatusDegraded, fmt.Sprintf("%d of %d upstreams unavailable: %v", len(down), len(ups), down)
	default:
		s.Detail = fmt.Sprintf("%d available", len(ups))
	}
	return s
}

func (a *Agent) cacheHealth() admin.Subsystem {
	if a.cache == nil {
		return admin.Subsystem{Status: admin.StatusOff, Detail: "proxy.cache.dir is empty"}
	}
	cc := a.cfg.Proxy.Cache
	info := map[string]any{"dir": cc.Dir, "entries": a.cache.Len(), "bytes": a.cache.Used(), "maxBytes": cc.MaxBytes}
	if err := unix.Access(cc.Dir, unix.W_OK); err != nil {
		return admin.Subsystem{Status: admin.StatusDegraded, Detail: fmt.Sprintf("%s is not writable (%v): responses stream through uncached", cc.Dir, err), Info: info}
	}
	return admin.Subsystem{Status: admin.StatusOK, Info: info}
}

func (a *Agent) kernelHealth() admin.Subsystem {
	info := map[string]any{"mode": a.bpfMode, "interfaces": a.Interfaces(), "notes": a.bpfNotes}
	switch {
	case a.bpfMode == "kernel":
		return admin.Subsystem{Status: admin.StatusOK, Detail: "XDP and TC attached", Info: info}
	case a.cfg.Agent.BPF == "off" || a.proxyOnly:
		return admin.Subsystem{Status: admin.StatusOff, Detail: a.bpfReason, Info: info}
	}
	// agent.bpf auto fell back: serving, every check in userspace.
	return admin.Subsystem{Status: admin.StatusDegraded, Detail: "userspace mode: " + a.bpfReason, Info: info}
}

func (a *Agent) configPlaneHealth() admin.Subsystem {
	if a.proxyOnly {
		return admin.Subsystem{Status: admin.StatusOff, Detail: "proxy start: no WebSocket server, no config bus"}
	}
	// state and configFileState differ when a persisted state (or a
	// change at run time) won over the file's config section.
	info := map[string]any{
		"websocketClients": a.ws.Clients(), "busSigned": len(a.busKeys) > 0,
		"stateFile": a.cfg.Agent.StateFile, "stateSource": a.cfg.Agent.StateSource,
		"state": a.State().Dump(), "configFileState": a.fileState.Load().Dump(),
	}
	if a.wsLn != nil {
		info["websocket"] = a.wsLn.Addr().String()
	}
	if a.busConn != nil {
		info["bus"] = a.busConn.LocalAddr().String()
	}
	if f := a.cfg.Agent.StateFile; f != "" {
		if err := unix.Access(filepath.Dir(f), unix.W_OK); err != nil {
			return admin.Subsystem{Status: admin.StatusDegraded,
				Detail: fmt.Sprintf("the state file's directory %s is not writable (%v): changes are refused", filepath.Dir(f), err), Info: info}
		}
	}
	return admin.Subsystem{Status: admin.StatusOK, Info: info}
}
