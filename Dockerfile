# syntax=docker/dockerfile:1
# Multi-stage: compile TypeScript with the full toolchain, ship only dist/ and production deps.
# The base image is pinned by digest (node:24-bookworm-slim, Node 24.18.0): a rebuild gets the
# same bytes; move the digest on purpose (docker buildx imagetools inspect node:24-bookworm-slim).
ARG NODE_IMAGE=node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The `node` devDependency (Node 24 for CI machines) is unnecessary here: the image has it.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
# Node sizes V8's old space to the whole of a container's memory limit (process.constrainedMemory()),
# so the heap may grow until the kernel kills the process: the rest of its memory (code, Kafka
# fetch buffers, sockets, some 100 MB) is not counted. Half the limit leaves room for that
# (https://nodejs.org/api/cli.html#--max-old-space-size-percentagepercentage). bench:memory runs
# the connector with these options in a 256 MB cgroup.
ENV NODE_OPTIONS=--max-old-space-size-percentage=50
# The shipped connectors/*.yaml take their ops port from here (`${PG2CRM_OPS_PORT:-0}`), so
# the HEALTHCHECK below has /healthz to ask. ops.host stays loopback unless PG2CRM_OPS_HOST opens
# it (docker-compose.yml sets 0.0.0.0 for Prometheus); the probe runs inside the container.
ENV PG2CRM_OPS_PORT=9464
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY connectors ./connectors
COPY schemas ./schemas
USER node
EXPOSE 9464
# node, not curl: the slim image has no curl. /healthz needs no ops token.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PG2CRM_OPS_PORT||9464)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# SIGTERM drains in-flight work and commits offsets; give it time (docker stop -t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/pg2crm.js"]
CMD ["run", "--config", "/etc/pg2crm/connector.yaml"]
