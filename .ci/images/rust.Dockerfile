# CI stand-in for the public `rust` image: the machine's own toolchain on the local Debian
# base, with the machine's CA bundle so cargo can reach crates.io. Never used by users.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates gcc g++ libc6-dev make cmake pkg-config perl git \
 && rm -rf /var/lib/apt/lists/*
COPY ca-bundle.crt /usr/local/share/ci-ca-bundle.crt
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH \
    CARGO_HOME=/usr/local/cargo \
    CARGO_HTTP_CAINFO=/usr/local/share/ci-ca-bundle.crt \
    SSL_CERT_FILE=/usr/local/share/ci-ca-bundle.crt
RUN cargo --version && rustc --version
