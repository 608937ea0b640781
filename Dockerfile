# syntax=docker/dockerfile:1
# One image for all four services; docker-compose.yml picks the binary with `command`.
#   docker build -t gcal-connector .
#   docker run --rm gcal-connector /usr/local/bin/api

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit). The target dir is a cache
# mount, so the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/api target/release/oauth-worker \
          target/release/metadata-worker target/release/mailer-worker \
          target/release/gcal-ops /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
COPY --from=builder /out/ /usr/local/bin/
USER app:app
# api 3002, oauth-worker 3004, metadata-worker health 3005, mailer-worker health 3006
EXPOSE 3002 3004 3005 3006
CMD ["/usr/local/bin/api"]
