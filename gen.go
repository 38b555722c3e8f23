// Package regedge is the root of the regedge module. It holds no code: only
// the go:generate lines that compile the kernel programs in bpf/ with bpf2go
// into internal/loader. The generated *_bpfel.go and *_bpfel.o files are
// committed, so building needs no clang.
//
// Run `make generate`: it pins the compiler (clang-19, llvm-strip-19) and the
// C flags through BPF2GO_CC, BPF2GO_STRIP and BPF2GO_CFLAGS, and CI fails when
// the committed objects differ from what it produces.
package regedge

//go:generate go tool bpf2go -target bpfel -go-package loader -output-dir internal/loader -type regedge_reason xdp bpf/xdp.c
//go:generate go tool bpf2go -target bpfel -go-package loader -output-dir internal/loader tc bpf/tc.c
//go:generate go tool bpf2go -target bpfel -go-package loader -output-dir internal/loader sklookup bpf/sklookup.c
