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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/regedge /usr/local/bin/regedge
# The agent needs CAP_BPF/CAP_NET_ADMIN for the kernel datapath; the
# orchestrator grants them (deploy/kubernetes, deploy/compose). Without them
# it runs every check in userspace and says so.
USER 0:0
EXPOSE 4873 3000 4874/udp 9873
ENTRYPOINT ["/usr/local/bin/regedge"]
CMD ["run"]
