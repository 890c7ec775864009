# syntax=docker/dockerfile:1.7
# One image for SageMaker training and hosting: `docker run IMAGE train` runs `pneumotype sagemaker train` on /opt/ml,
# `docker run IMAGE serve` serves /opt/ml/model on port 8080 (GET /ping, POST /invocations).
#   docker build -t pneumotype .                          GPU: CUDA 11.2 + cuDNN 8 + @tensorflow/tfjs-node-gpu (falls
#                                                         back to the CPU package on an instance without a GPU)
#   docker build -t pneumotype:cpu --build-arg VARIANT=cpu .   CPU only, smaller
ARG VARIANT=gpu
ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04

# --- build: dependencies, native TensorFlow (downloaded by tfjs-node's own installer), dist/, then dev tools pruned
FROM ${NODE_IMAGE} AS build
WORKDIR /opt/pneumotype
ENV PNEUMOTYPE_REQUIRE_NATIVE=1
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY lib ./lib
COPY bin ./bin
COPY models ./models
RUN node scripts/setup-tfjs.mjs && npm run build && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# The GPU package next to the CPU one; its installer fetches libtensorflow-gpu 2.9.1 (no GPU is needed to build).
FROM build AS build-gpu
RUN npm install --no-save --omit=dev --ignore-scripts --no-audit --no-fund @tensorflow/tfjs-node-gpu@4.22.0 \
 && cd node_modules/@tensorflow/tfjs-node-gpu && PATH=/opt/pneumotype/node_modules/.bin:$PATH node scripts/install.js gpu download

# The entry point SageMaker calls with `train` or `serve` (SAGEMAKER_BIND_TO_PORT: inference pipelines pick the port).
FROM scratch AS entrypoint
COPY --chmod=755 <<'SCRIPT' /usr/local/bin/pneumotype-entrypoint
#!/bin/sh
set -e
cli=/opt/pneumotype/bin/pneumotype.js
case "${1:-}" in
  train) shift; exec node "$cli" sagemaker train "$@" ;;
  serve) shift; exec node "$cli" serve --port "${SAGEMAKER_BIND_TO_PORT:-8080}" --model "${PNEUMOTYPE_MODEL_DIR:-/opt/ml/model}" "$@" ;;
  *) exec node "$cli" "$@" ;;
esac
SCRIPT

# --- runtime images
FROM ${NODE_IMAGE} AS cpu
COPY --from=build /opt/pneumotype /opt/pneumotype
COPY --from=entrypoint /usr/local/bin/pneumotype-entrypoint /usr/local/bin/pneumotype-entrypoint

FROM ${CUDA_IMAGE} AS gpu
COPY --from=build /usr/local/bin/node /usr/local/bin/node
COPY --from=build-gpu /opt/pneumotype /opt/pneumotype
COPY --from=entrypoint /usr/local/bin/pneumotype-entrypoint /usr/local/bin/pneumotype-entrypoint

FROM ${VARIANT}
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
ENV NODE_ENV=production PNEUMOTYPE_SM_ROOT=/opt/ml
WORKDIR /opt/pneumotype
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pneumotype-entrypoint"]
CMD ["serve"]
