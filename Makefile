# regedge entry points. `make run` and `make test` are the README's two commands.
GO          ?= go
BIN         := bin/regedge
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME    ?= 10s
BENCHTIME   ?= 1s
BENCHCOUNT  ?= 5
# Tests that need root or BPF skip on a laptop; CI sets REGEDGE_REQUIRE_BPF=1
# so that a skip there is a failure.
TESTFLAGS   ?=

.PHONY: build run test test-race generate bench bench-kernel bench-veth fuzz fuzz-kernel lint lint-code vulncheck check-size cross clean manifests chart-lint

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/agent

# The agent with its embedded defaults (admin on 127.0.0.1:9873).
run: build
	./$(BIN) run $(ARGS)

test:
	$(GO) test $(TESTFLAGS) ./...

test-race:
	$(GO) test -race $(TESTFLAGS) ./...

# Regenerates the bpf2go objects (gen.go) with the pinned compiler.
CLANG       ?= clang-19
STRIP       ?= llvm-strip-19
MULTIARCH   := $(shell $(CC) -print-multiarch 2>/dev/null || echo $$(uname -m)-linux-gnu)
BPF_CFLAGS  := -O2 -g -Wall -Werror -I/usr/include/$(MULTIARCH)
generate:
	BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) BPF2GO_CFLAGS='$(BPF_CFLAGS)' $(GO) generate ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./internal/codec

# Program.Benchmark of the XDP program against an XDP_PASS floor (root):
# 101 rounds, the median of the per-round ratios.
bench-kernel:
	$(GO) test ./internal/loader -run '^$$' -bench BenchmarkXDP -benchtime 101x

# XDP drop rate vs a Go receiver over a veth pair between two namespaces (root).
bench-veth:
	$(GO) run ./bench/vethrate -duration 3s -senders 1
	$(GO) run ./bench/vethrate -duration 3s -senders 2

# The kernel-vs-codec differential fuzzer, longer than in every test run (root).
KERNEL_FUZZ ?= 2000000
fuzz-kernel:
	REGEDGE_KERNEL_FUZZ=$(KERNEL_FUZZ) $(GO) test ./internal/loader -run TestXDPDifferentialFuzz -count=1 -v -timeout 30m

# Short runs of every fuzz target (go test runs one target at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# No tracked file over 1 MiB: a committed binary would ride along in every clone
# (the generated BPF objects are about 60 KiB).
MAX_FILE_BYTES ?= 1048576
check-size:
	@git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | \
	  awk -v max=$(MAX_FILE_BYTES) '$$1 > max { print "tracked file over " max " bytes: " substr($$0, index($$0, " ") + 1) " (" $$1 " bytes)"; bad = 1 } END { exit bad }'

# Linters, pinned and run with `go run`, so they need no install and do not
# enter go.mod. LINT_PENDING (empty now) names packages left out
# of staticcheck and errcheck until they are clean (gofmt and vet still cover
# them); empty it once they are.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
ERRCHECK    ?= github.com/kisielk/errcheck@v1.30.0
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.9.0
LINT_PENDING ?=
LINT_PKGS    = $(if $(strip $(LINT_PENDING)),$$($(GO) list ./... | grep -v -F $(foreach p,$(LINT_PENDING),-e $(patsubst ./%/...,github.com/regedge/regedge/%,$(p)))),./...)

# Everything CI checks; lint-code is the part that needs no network beyond
# the module proxy (govulncheck reads vuln.go.dev).
lint: lint-code vulncheck

lint-code: check-size
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) $(LINT_PKGS)
	$(GO) run $(ERRCHECK) -ignoretests -exclude .ci/errcheck-excludes $(LINT_PKGS)

# govulncheck needs vuln.go.dev. Where that cannot be reached (CI here
# reaches only package registries) it says so loudly and passes; a finding
# always fails.
vulncheck:
	@out=$$($(GO) run $(GOVULNCHECK) ./... 2>&1); rc=$$?; echo "$$out"; \
	  if [ $$rc -ne 0 ] && echo "$$out" | grep -q 'fetching vulnerabilities'; then \
	    echo "vulncheck: SKIPPED, the vulnerability database (vuln.go.dev) is not reachable from this machine: nothing was checked"; exit 0; fi; \
	  exit $$rc

# Off Linux the kernel datapath is stubbed out (docs/kernel.md, "Off Linux"):
# the rest must build, and its tests compile and vet, for a developer's Mac.
cross:
	GOOS=darwin GOARCH=arm64 $(GO) build ./...
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...

# Helm, pinned, from the Go module proxy (CI installs the same version with
# go install and sets HELM to it).
HELM_VERSION ?= v3.22.0
HELM        ?= $(GO) run helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# Renders the plain manifests in deploy/kubernetes from the chart in
# deploy/helm/regedge (a test checks that the committed files are its output).
manifests:
	HELM='$(HELM)' sh deploy/kubernetes/render.sh

chart-lint:
	$(HELM) lint --strict deploy/helm/regedge
	$(HELM) lint --strict deploy/helm/regedge -f deploy/kubernetes/values.yaml

clean:
	rm -rf bin
