package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/fleet"
)

// sendFleetHint sends the revalidation hint for pkg to every peer of
// c.Fleet.Peers (dns: names resolved now), leaving out this host's own
// agent (its fleet.listen port on one of this host's addresses), and says
// where it went.
func sendFleetHint(w io.Writer, c *config.Config, pkg string) error {
	if err := fleet.ValidName(pkg); err != nil {
		return fmt.Errorf("cache purge --fleet: %w", err)
	}
	peers, err := fleet.ParsePeers(c.Fleet.Peers)
	if err != nil {
		return fmt.Errorf("cache purge --fleet: fleet.peers%w", err)
	}
	if len(peers) == 0 {
		return errors.New("cache purge --fleet: fleet.peers is empty (--config FILE or REGEDGE_FLEET_PEERS): no peer to tell")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, _, resolveErr := fleet.Resolve(ctx, net.DefaultResolver, peers, nil)
	var self fleet.Self
	if c.Fleet.Listen != "" {
		self.Bound, _ = fleet.ParseListen(c.Fleet.Listen) // Validate has checked it
		if local, err := fleet.NewLocalAddrs(); err == nil {
			self.Local, _ = local.List()
			local.Close()
		}
	}
	var to []netip.AddrPort
	for _, ap := range addrs {
		if !self.Is(ap) {
			to = append(to, ap)
		}
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return fmt.Errorf("cache purge --fleet: %w", err)
	}
	defer conn.Close()
	n, sendErr := fleet.SendOnce(conn, to, pkg)
	names := make([]string, len(to))
	for i, ap := range to {
		names[i] = ap.String()
	}
	fmt.Fprintf(w, "sent the hint for %s to %d of %d peers: %s\n", pkg, n, len(to), strings.Join(names, " "))
	if err := errors.Join(resolveErr, sendErr); err != nil {
		return fmt.Errorf("cache purge --fleet: %w", err)
	}
	if len(to) == 0 {
		return errors.New("cache purge --fleet: no peer resolved (other than this host)")
	}
	return nil
}
