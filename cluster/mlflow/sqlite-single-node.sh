#!/usr/bin/env bash
# One-node tracking server (a laptop, a single GPU box): sqlite backend, proxied artifacts, basic
# authentication. Reachable from a Ray cluster at http://THIS_HOST:5000. For a team, use docker-compose.yaml.
#   pip install 'mlflow[auth]'     # basic auth needs the auth extra (Flask-WTF)
#   MLFLOW_AUTH_ADMIN_PASSWORD="$(openssl rand -base64 24)" cluster/mlflow/sqlite-single-node.sh
# Layout under MLFLOW_ROOT (default ~/mlflow, mode 700): mlflow.db (runs), artifacts/ (served to every
# user), auth/ (the basic-auth user database and its settings: never under artifacts/). Users get no
# access by default (default_permission = NO_PERMISSIONS); owners grant it.
set -euo pipefail
umask 077
root=${MLFLOW_ROOT:-$HOME/mlflow}
if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
  echo "set MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters) for the admin user of the tracking server" >&2
  exit 2
fi
mkdir -p "$root/artifacts" "$root/auth"
cat > "$root/auth/basic_auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$root/auth/basic_auth.db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$root/auth/basic_auth.ini"
exec mlflow server --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "sqlite:///$root/mlflow.db" \
  --artifacts-destination "$root/artifacts" --serve-artifacts \
  --app-name basic-auth \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,127.0.0.1}"
