#!/usr/bin/env bash
# One-node tracking server (a laptop, a single GPU box): sqlite backend, proxied artifacts.
# Reachable from a Ray cluster at http://THIS_HOST:5000. For a team, use docker-compose.yaml.
set -euo pipefail
root=${MLFLOW_ROOT:-$HOME/mlflow}
mkdir -p "$root/artifacts"
exec mlflow server --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "sqlite:///$root/mlflow.db" \
  --artifacts-destination "$root/artifacts" --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,127.0.0.1}"
