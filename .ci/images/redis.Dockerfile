# CI stand-in for the public `redis` image, from Debian's package.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 6379
USER redis
CMD ["redis-server", "--protected-mode", "no", "--bind", "0.0.0.0", "--dir", "/tmp"]
