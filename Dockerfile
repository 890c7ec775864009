# syntax=docker/dockerfile:1.7
# One image for SageMaker training and hosting: `docker run IMAGE train` runs `pneumotype sagemaker train` on /opt/ml,
# `docker run IMAGE serve` serves /opt/ml/model on port 8080 (GET /ping, POST /invocations).
#   docker build -t pneumotype .                          GPU: CUDA 11.2 + cuDNN 8 + @tensorflow/tfjs-node-gpu (falls
#                                                         back to the CPU package on an instance without a GPU)
#   docker build -t pneumotype:cpu --build-arg VARIANT=cpu .   CPU only, smaller
ARG VARIANT=gpu
ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04

# Layers in the order they change: the dependencies and the two native TensorFlow downloads (tfjs-node's libtensorflow,
# then libtensorflow-gpu) depend only on package.json, package-lock.json and scripts/setup-tfjs.mjs, so an edit of the
# sources rebuilds dist/ alone.

# --- deps: every dependency (dev tools too, for the build) and native TensorFlow (downloaded by tfjs-node's installer)
FROM --platform=linux/amd64 ${NODE_IMAGE} AS deps
WORKDIR /opt/pneumotype
ENV PNEUMOTYPE_REQUIRE_NATIVE=1
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY scripts/setup-tfjs.mjs ./scripts/setup-tfjs.mjs
RUN node scripts/setup-tfjs.mjs

# --- prod: the runtime dependencies only (dev tools pruned)
FROM deps AS prod
RUN npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# The GPU package next to the CPU one; its installer fetches libtensorflow-gpu 2.9.1 (no GPU is needed to build).
FROM prod AS prod-gpu
RUN npm install --no-save --omit=dev --ignore-scripts --no-audit --no-fund @tensorflow/tfjs-node-gpu@4.22.0 \
 && cd node_modules/@tensorflow/tfjs-node-gpu && PATH=/opt/pneumotype/node_modules/.bin:$PATH node scripts/install.js gpu download

# --- build: the sources and dist/ (the compiler comes from deps)
FROM deps AS build
COPY tsconfig.json ./
COPY scripts ./scripts
COPY lib ./lib
COPY bin ./bin
COPY models ./models
RUN npm run build

# What goes on top of the dependencies in /opt/pneumotype: the sources, the shipped model and dist/.
FROM scratch AS app
COPY --from=build /opt/pneumotype/tsconfig.json /opt/pneumotype/tsconfig.json
COPY --from=build /opt/pneumotype/scripts /opt/pneumotype/scripts
COPY --from=build /opt/pneumotype/lib /opt/pneumotype/lib
COPY --from=build /opt/pneumotype/bin /opt/pneumotype/bin
COPY --from=build /opt/pneumotype/models /opt/pneumotype/models
COPY --from=build /opt/pneumotype/dist /opt/pneumotype/dist

# The entry point SageMaker calls with `train` or `serve` (SAGEMAKER_BIND_TO_PORT: inference pipelines pick the port).
FROM scratch AS entrypoint
COPY --chmod=755 <<'SCRIPT' /usr/local/bin/pneumotype-entrypoint
#!/bin/sh
set -e
cli=/opt/pneumotype/bin/pneumotype.js
case "${1:-}" in
  train) shift; exec node "$cli" sagemaker train "$@" ;;
  serve) shift
    # The port and the model folder SageMaker expects, unless the arguments name their own (the CLI refuses an
    # option given twice).
    port=; model=
    for a in "$@"; do case "$a" in --port|--port=*) port=1 ;; --model|--model=*) model=1 ;; esac; done
    [ -n "$model" ] || set -- --model "${PNEUMOTYPE_MODEL_DIR:-/opt/ml/model}" "$@"
    [ -n "$port" ] || set -- --port "${SAGEMAKER_BIND_TO_PORT:-8080}" "$@"
    exec node "$cli" serve "$@" ;;
  *) exec node "$cli" "$@" ;;
esac
SCRIPT

# --- runtime images
FROM --platform=linux/amd64 ${NODE_IMAGE} AS cpu
COPY --from=prod /opt/pneumotype /opt/pneumotype
COPY --from=app /opt/pneumotype /opt/pneumotype
COPY --from=entrypoint /usr/local/bin/pneumotype-entrypoint /usr/local/bin/pneumotype-entrypoint

FROM --platform=linux/amd64 ${CUDA_IMAGE} AS gpu
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
COPY --from=prod-gpu /opt/pneumotype /opt/pneumotype
COPY --from=app /opt/pneumotype /opt/pneumotype
COPY --from=entrypoint /usr/local/bin/pneumotype-entrypoint /usr/local/bin/pneumotype-entrypoint

FROM ${VARIANT}
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
ENV NODE_ENV=production PNEUMOTYPE_SM_ROOT=/opt/ml
WORKDIR /opt/pneumotype
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pneumotype-entrypoint"]
CMD ["serve"]
