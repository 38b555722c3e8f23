package configbus

import (
	"context"
	"crypto/ed25519"
	"net"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

// TestQueryReadsStatesAndChangesNothing: a heartbeat to each agent brings
// back its state (two agents in different states); nothing changes; a
// dead target says so; an agent with bus keys answers only a signed one.
func TestQueryReadsStatesAndChangesNothing(t *testing.T) {
	a, sa := startServer(t, "")
	b, sb := startServer(t, "")
	s := sb.State()
	s.Rows = 40
	if _, err := sb.Set(s, "cli"); err != nil {
		t.Fatal(err)
	}
	signedAddr, ss, _ := startServerWith(t, "", Options{Allow: loopback, PublicKeys: []ed25519.PublicKey{pub(busKey)}})
	dead, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	beforeA, beforeB := sa.State(), sb.State()
	opts := QueryOptions{Sender: codec.DefaultState(), Deadline: 600 * time.Millisecond, Retry: 50 * time.Millisecond}
	res, err := Query(context.Background(), []string{a, b, deadAddr, signedAddr}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].HasReport || res[0].Reported != beforeA || !res[1].HasReport || res[1].Reported != beforeB || res[1].Reported.Rows != 40 {
		t.Fatalf("reports: %+v", res[:2])
	}
	if res[2].HasReport || res[2].Err == "" || res[3].HasReport {
		t.Fatalf("dead target %+v, unsigned to a keyed agent %+v", res[2], res[3])
	}
	if sa.State() != beforeA || sb.State() != beforeB {
		t.Fatal("a query changed a state")
	}
	opts.Key = busKey
	res, err = Query(context.Background(), []string{signedAddr}, opts)
	if err != nil || !res[0].HasReport || res[0].Reported != ss.State() {
		t.Fatalf("signed query: %+v %v", res, err)
	}
}
