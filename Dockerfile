# syntax=docker/dockerfile:1
# Multi-stage: compile TypeScript with the full toolchain, ship only dist/ and production deps.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The `node` devDependency (Node 24 for CI machines) is unnecessary here: the image has it.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY connectors ./connectors
COPY schemas ./schemas
USER node
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PG2CRM_OPS_PORT||9464)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# SIGTERM drains in-flight work and commits offsets; give it time (docker stop -t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/pg2crm.js"]
CMD ["run", "--config", "/etc/pg2crm/connector.yaml"]
