# One image for every Flowplane process; docker-compose.yml picks the process with `command`.
FROM node:22-bookworm-slim

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first, so source edits do not reinstall them. tsx runs the TypeScript sources
# directly (it is a runtime dependency), so there is no build step.
COPY package.json package-lock.json .npmrc ./
RUN npm install --no-audit --no-fund --omit=dev && npm cache clean --force

COPY tsconfig.json ./
COPY proto ./proto
COPY services ./services
COPY gateway ./gateway

USER node
# API ports (gateway 8080, services 50051-50054) and admin ports (/healthz, /readyz, /metrics: 9450-9454).
EXPOSE 8080 50051 50052 50053 50054 9450 9451 9452 9453 9454
CMD ["node", "--import", "tsx", "gateway/main.ts"]
