# syntax=docker/dockerfile:1
# The copyimage-canceller image: built with the locked dependencies, run as a
# non-root user on a distroless base (glibc, CA certificates, nothing else).
#
#   docker build -t copyimage-canceller:0.1.0 .
#
# The tag the Helm chart and the kustomize base use is the crate version
# (Cargo.toml); push the image to your registry and set image.repository
# (chart) or images[].newName (kustomize overlay).

# Same Debian release in both stages, so the binary's glibc matches.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin copyimage-canceller \
    && install -D -m 0755 target/release/copyimage-canceller /out/copyimage-canceller

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="copyimage-canceller" \
      org.opencontainers.image.description="Kubernetes operator that cancels Alibaba Cloud ECS cross-region image copies (CancelCopyImage)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/copyimage-canceller /usr/local/bin/copyimage-canceller
# Numeric, so that the kubelet can check runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/copyimage-canceller"]
CMD ["run"]
