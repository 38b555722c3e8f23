package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// TestConfigReadByAddress: the XDP program reads config_map's value by
// address, so the spec handed to the kernel has no map of the placeholder's
// own (whose zeroes would judge every datagram) and every load of it names
// config_map as a direct value load. Whether the program then judges by
// the agent's settings, the allow-list and version tests show (a valid
// datagram passes only with config_map's values).
func TestConfigReadByAddress(t *testing.T) {
	spec, err := xdpSpec(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := spec.Maps[configSection]; ok {
		t.Fatalf("%s is still a map of its own", configSection)
	}
	direct := 0
	for _, ins := range spec.Programs[xdpProgRegedgeXdp].Instructions {
		switch ins.Reference() {
		case configSection:
			t.Fatalf("instruction %v still refers to %s", ins, configSection)
		case xdpMapConfigMap:
			if ins.IsLoadFromMap() && ins.Src == asm.PseudoMapValue {
				direct++
			}
		}
	}
	if direct == 0 {
		t.Fatal("no direct value load of config_map in regedge_xdp")
	}

	// An XDP object without the placeholder (a build that does not match
	// this loader) is an error, not loaded as it is.
	bare, err := loadXdp()
	if err != nil {
		t.Fatal(err)
	}
	delete(bare.Maps, configSection)
	if err := configByAddress(bare); err == nil {
		t.Fatal("configByAddress accepted an object without the placeholder")
	}
}

// TestApplyXDPOptionsMissingConstant: an object without one of the
// constants the loader sets (another build's) is an error naming it, not a
// program running with the compiled-in default.
func TestApplyXDPOptionsMissingConstant(t *testing.T) {
	spec, err := loadXdp()
	if err != nil {
		t.Fatal(err)
	}
	delete(spec.Variables, xdpVarSynRate)
	err = applyXDPOptions(spec, DefaultOptions())
	if !errors.Is(err, errNoConstant) || !strings.Contains(err.Error(), xdpVarSynRate) {
		t.Fatalf("got %v, want errNoConstant naming %s", err, xdpVarSynRate)
	}
}

// TestPackedPorts: the programs stop at the first empty proxy port slot, so
// the loader packs the configured ports from slot 0; a 0 among them (no TCP
// port) would otherwise hide the ports after it.
func TestPackedPorts(t *testing.T) {
	got := packedPorts([]uint16{0, 4873, 0, 443})
	if want := [MaxProxyPorts]uint16{4873, 443, 0, 0}; got != want {
		t.Fatalf("packedPorts = %v, want %v", got, want)
	}
}
