package loader

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func TestAblate(t *testing.T) {
	path := os.Getenv("ABLATE_OBJ")
	if path == "" {
		t.Skip()
	}
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	floor, _ := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	var cfg [64]byte
	cfg[0] = 2
	coll.Maps["config_map"].Put(uint32(0), cfg[:])
	coll.Maps["allow_v4"].Put([]byte{24, 0, 0, 0, 192, 0, 2, 0}, uint8(1))
	pkts := map[string][]byte{"tcp": tcpPacket(false, 40000, 443, 0x18, "GET / HTTP/1.1\r\n\r\n"), "dg": busPacket(false, 0, validDatagram())}
	for name, pkt := range pkts {
		for r := 0; r < 9; r++ {
			_, f, _ := floor.Benchmark(pkt, 300000, nil)
			_, p, _ := coll.Programs["regedge_xdp"].Benchmark(pkt, 300000, nil)
			t.Logf("%s: floor %v prog %v", name, f, p)
		}
	}
}
