//go:build linux

package loader

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

// The least-privilege runs re-execute this test binary as a non-root user
// holding only the capabilities the DaemonSet grants, inside the hosts' B
// namespace, on a bpffs the (root) parent mounted and handed over.
const (
	lpChildEnv   = "REGEDGE_LP_CHILD" // the child's bpffs
	lpIfEnv      = "REGEDGE_LP_IF"
	unprivileged = 65534 // nobody
)

// runUnprivileged runs TestLeastPrivilegeChild as uid/gid 65534 with caps
// (e.g. "bpf,net_admin,perfmon") in h's B namespace; it returns the child's
// combined output and its error.
func runUnprivileged(t *testing.T, h *testutil.Hosts, bpffs, caps string) (string, error) {
	t.Helper()
	for _, tool := range []string{"setpriv", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipOrFail(t, tool+" (util-linux) is needed to run as a non-root user with capabilities")
		}
	}
	var set []string
	for _, c := range strings.Split(caps, ",") {
		set = append(set, "+"+c)
	}
	capList := "-all," + strings.Join(set, ",")
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+filepath.Join("/run/netns", h.NameB),
		"setpriv", fmt.Sprintf("--reuid=%d", unprivileged), fmt.Sprintf("--regid=%d", unprivileged), "--clear-groups",
		"--inh-caps="+capList, "--ambient-caps="+capList, "--bounding-set="+capList,
		"--", bin, "-test.run=^TestLeastPrivilegeChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), lpChildEnv+"="+bpffs, lpIfEnv+"="+h.IfB)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestLeastPrivilegeChild is the child half of the least-privilege tests;
// it does nothing unless started by runUnprivileged.
func TestLeastPrivilegeChild(t *testing.T) {
	bpffs := os.Getenv(lpChildEnv)
	if bpffs == "" {
		t.Skip("runs only as the child of the least-privilege tests")
	}
	dp, err := Open(Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{os.Getenv(lpIfEnv)}, SkLookup: true,
		Settings: &Settings{Versions: codec.DefaultVersions, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}})
	if err != nil {
		fmt.Printf("OPEN-ERROR %v\n", err)
		fmt.Printf("EXPLAIN %s\n", Explain(err))
		t.Fatal("open failed")
	}
	fmt.Printf("OPEN-OK uid %d links %s\n", os.Getuid(), strings.Join(dp.Links(), ","))
	dp.Close()
}

// TestLeastPrivilege runs Open as the DaemonSet's kind of user: not root,
// holding CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only, on a bpffs mounted
// for it. It loads, attaches and pins everything, and the pinned XDP
// program judges real packets afterwards. Without CAP_PERFMON the verifier
// refuses the XDP program: the error says so in one line, with the hint,
// and nothing is left pinned.
func TestLeastPrivilege(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := testBPFFS(t)
	// The DaemonSet's user owns the mounted bpffs; the test's temporary
	// directory above it must let that user through.
	if err := os.Chmod(filepath.Dir(bpffs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(bpffs, unprivileged, unprivileged); err != nil {
		t.Fatal(err)
	}
	defer detachIn(t, h, bpffs)

	out, err := runUnprivileged(t, h, bpffs, "bpf,net_admin")
	if err == nil {
		t.Fatalf("without CAP_PERFMON the load succeeded; the verifier changed (update the hint):\n%s", out)
	}
	explain := lineAfter(out, "EXPLAIN ")
	if explain != ErrNoPerfmon.Error() {
		t.Errorf("Explain without CAP_PERFMON = %q, want %q\nchild output:\n%s", explain, ErrNoPerfmon.Error(), out)
	}
	if openErr := lineAfter(out, "OPEN-ERROR "); !strings.Contains(openErr, "CAP_PERFMON") || !strings.Contains(openErr, "XDP") {
		t.Errorf("the error does not name CAP_PERFMON and the program: %q", openErr)
	}
	if st, err := ReadStatus(bpffs); err != nil || len(st.Links)+len(st.Maps) != 0 {
		t.Fatalf("a refused first start left pins: %+v, %v", st, err)
	}

	out, err = runUnprivileged(t, h, bpffs, "bpf,net_admin,perfmon")
	if err != nil {
		t.Fatalf("as uid %d with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON: %v\n%s", unprivileged, err, out)
	}
	if got := lineAfter(out, "OPEN-OK "); got != fmt.Sprintf("uid %d links sklookup-netns,tcx-egress-%s,tcx-ingress-%s,xdp-%s", unprivileged, h.IfB, h.IfB, h.IfB) {
		t.Fatalf("child: %q\n%s", got, out)
	}
	// The pinned programs judge real packets with nobody holding them.
	send := udpIn(t, h, "A", ":0")
	dst, _ := net.ResolveUDPAddr("udp", "192.0.2.2:4874")
	bad := validDatagram()
	bad[len(bad)-1] ^= 1
	if _, err := send.WriteToUDP(bad, dst); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the unprivileged agent's XDP program to drop a bad datagram", func() bool {
		st, err := ReadStatus(bpffs)
		return err == nil && st.XDP[ReasonChecksum] == 1
	})
}

// lineAfter returns the rest of the first line of out that starts with prefix.
func lineAfter(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimPrefix(l, prefix)
		}
	}
	return ""
}

// TestProbeNamesTheKernelVersion: the probes pass here, and a missing
// feature is reported with the Linux version that brought it.
func TestProbeNamesTheKernelVersion(t *testing.T) {
	testutil.RequireRoot(t)
	if err := Probe(); err != nil {
		t.Fatalf("Probe on the test kernel: %v", err)
	}
	saved := requiredFeatures
	defer func() { requiredFeatures = saved }()
	requiredFeatures = append([]feature(nil), saved...)
	for i := range requiredFeatures {
		if requiredFeatures[i].what == "bpf_xdp_load_bytes" {
			requiredFeatures[i].probe = func() error { return fmt.Errorf("probe: %w", ebpf.ErrNotSupported) }
		}
	}
	err := Probe()
	if !errors.Is(err, ErrKernelTooOld) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("Probe with a missing helper: %v, want ErrKernelTooOld", err)
	}
	if want := "bpf_xdp_load_bytes, which need Linux 5.18 or newer"; !strings.Contains(err.Error(), want) {
		t.Errorf("%v: does not say %q", err, want)
	}
	if ex := Explain(err); strings.Contains(ex, "\n") || !strings.Contains(ex, "5.18") {
		t.Errorf("Explain = %q, want one line naming 5.18", ex)
	}
}
