# Builds the three LevelUp binaries in one stage and copies them into a slim runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bins \
 && mkdir -p /out \
 && cp target/release/levelup-api target/release/levelup-worker target/release/levelup-scheduler /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 levelup
COPY --from=build /out/ /usr/local/bin/
USER levelup
ENV LEVELUP_API_BIND=0.0.0.0:8080 LEVELUP_LOG_FORMAT=json LEVELUP_OUTBOX_DIR=/var/lib/levelup/outbox
EXPOSE 8080
CMD ["levelup-api", "serve"]
