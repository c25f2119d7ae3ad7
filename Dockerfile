# syntax=docker/dockerfile:1

# Build stage: a static binary (CGO off), modules cached in their own layer.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/fleetd ./cmd/fleetd

# Runtime stage: no shell, no package manager, runs as an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fleetd /usr/local/bin/fleetd
USER nonroot:nonroot
ENV FLEETD_ADDR=:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fleetd"]
CMD ["serve"]
