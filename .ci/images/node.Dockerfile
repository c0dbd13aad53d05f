# CI stand-in for the public `node` image: the machine's own Node.js on the local Debian
# base, with the machine's CA bundle so npm can reach its registry. Never used by users.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY ca-bundle.crt /usr/local/share/ci-ca-bundle.crt
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ci-ca-bundle.crt \
    npm_config_cafile=/usr/local/share/ci-ca-bundle.crt
RUN node --version && npm --version
