# syntax=docker/dockerfile:1
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse --short=12 HEAD) -t fleetd .

# Build stage: a static binary (CGO off), modules cached in their own layer.
# The Go image is the release named in go.mod (TestDockerfile keeps them in
# step); the build command below is run as is by that test.
FROM golang:1.26.8 AS build
ARG VERSION=devel
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X github.com/fleetd/fleetd/internal/buildinfo.Version=${VERSION} -X github.com/fleetd/fleetd/internal/buildinfo.Commit=${COMMIT}" -o /out/fleetd ./cmd/fleetd

# Runtime stage: the binary and the CA certificates (for rediss://), nothing
# else: no shell, no package manager, no base image whose tag could move
# under the build. Runs as an unprivileged user.
FROM scratch
ARG VERSION=devel
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="fleetd" \
      org.opencontainers.image.description="Fleet presence control plane: webhook firehose into Redis, Prometheus metrics, workspace REST API" \
      org.opencontainers.image.source="https://github.com/fleetd/fleetd" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/fleetd /usr/local/bin/fleetd
USER 65532:65532
ENV FLEETD_ADDR=:8080
EXPOSE 8080
# No shell in the image: fleetd checks its own /readyz (on $FLEETD_ADDR).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["/usr/local/bin/fleetd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/fleetd"]
CMD ["serve"]
