# syntax=docker/dockerfile:1
# Multi-stage build on the current Node LTS. The build stage compiles TypeScript and better-sqlite3's
# native addon; the runtime stage carries production dependencies only and runs as the unprivileged
# `node` user, with the keystore on a volume. (Not built in this project's CI, which has no Docker
# engine: keep it plain enough to review against `npm ci` + `npm run build`.)

FROM node:24-slim AS build
WORKDIR /app
# better-sqlite3 builds from source with node-gyp when no prebuilt binary can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY types ./types
COPY *.ts ./
COPY component ./component
COPY bridges ./bridges
COPY http ./http
COPY keystore ./keystore
COPY ha ./ha
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev

FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json config.example.yaml LICENSE README.md ./
RUN mkdir -p /data /etc/xmpp-e2ee-gateway && chown node:node /data
USER node
# The keystore (keys, sessions, queues): set keystore.path to /data/gateway.db.
VOLUME ["/data"]
EXPOSE 8080
# /healthz on the port the config uses (set http.host: 0.0.0.0 to publish the API outside the container).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.GATEWAY_HTTP_PORT || 8080) + '/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/main.js"]
CMD ["--config", "/etc/xmpp-e2ee-gateway/config.yaml"]
