# regedge container image: a static binary on a minimal, shell-less base.
# Build:  docker build --build-arg VERSION=$(git describe --always) --build-arg COMMIT=$(git rev-parse --short HEAD) -t regedge .
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
# The same target the README uses; CGO is off there, so the binary is static.
RUN make build VERSION=${VERSION} COMMIT=${COMMIT}
# The agent runs as a non-root user, and Kubernetes gives such a user no
# capabilities of its own (no ambient set): the binary carries the three it
# needs as file capabilities, which the container's bounding set must allow
# (the chart, compose: cap_add BPF, NET_ADMIN, PERFMON). Without them in the
# bounding set the kernel refuses to exec it (EPERM): docs/install.md.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libcap2-bin >/dev/null \
 && setcap cap_bpf,cap_net_admin,cap_perfmon=ep bin/regedge \
 && getcap bin/regedge \
 && install -d -o 65532 -g 65532 -m 0700 /out/var/lib/regedge

FROM gcr.io/distroless/static-debian12:nonroot
# COPY keeps the security.capability xattr (BuildKit, Docker 23 and later).
COPY --from=build /src/bin/regedge /usr/local/bin/regedge
# The state directory, owned by the agent's user (a fresh volume copies it).
COPY --from=build --chown=65532:65532 /out/var/lib/regedge /var/lib/regedge
USER 65532:65532
EXPOSE 4873 3000 4874/udp 4875/udp 9873
ENTRYPOINT ["/usr/local/bin/regedge"]
CMD ["run"]
