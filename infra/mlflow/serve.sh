#!/usr/bin/env bash
# The team's MLflow tracking server: runs and metrics in PostgreSQL, artifacts in S3 (proxied by the
# server, so clients never hold bucket credentials), users and permissions from MLflow's basic-auth
# app. Every setting comes from the environment: an EnvironmentFile under systemd
# (infra/mlflow/mlflow.service), a Secret in Kubernetes, or the shell. See infra/README.md.
#
#   MLFLOW_BACKEND_STORE_URI        postgresql://mlflow:PASSWORD@db:5432/mlflow               required
#   MLFLOW_AUTH_DATABASE_URI        postgresql://mlflow:PASSWORD@db:5432/mlflow_auth          required*
#   MLFLOW_ARTIFACTS_DESTINATION    s3://bucket/mlartifacts                                   required
#   MLFLOW_ALLOWED_HOSTS            Host headers clients send, with the port when not 80/443:
#                                   mlflow.example.org,mlflow.mlflow.svc:5000                 required
#   MLFLOW_FLASK_SERVER_SECRET_KEY  CSRF key for the web forms, the same on every replica      required
#   MLFLOW_AUTH_ADMIN_USERNAME      the first admin (default: admin)
#   MLFLOW_AUTH_ADMIN_PASSWORD      its password; read only while that admin does not exist yet
#   MLFLOW_AUTH_DEFAULT_PERMISSION  what a user may do with others' experiments (default: READ)
#   MLFLOW_AUTH_CACHE_TTL_SECONDS   how long a worker trusts a checked password (default 60; 0: never)
#   MLFLOW_S3_ENDPOINT_URL          an S3-compatible endpoint (SeaweedFS, MinIO); unset on AWS
#   AWS credentials                 the usual chain: environment, ~/.aws, instance or pod role
#   MLFLOW_HOST, MLFLOW_PORT        bind address (default 127.0.0.1: put a TLS proxy in front) and port (5000)
#   MLFLOW_WORKERS                  uvicorn worker processes (default 4)
#   MLFLOW_RUNTIME_DIR              private folder for the generated auth config (default below)
#   MLFLOW_BIN                      the mlflow executable (default: mlflow on PATH)
# * unless MLFLOW_AUTH_CONFIG_PATH names a complete basic-auth config of your own.
# Arguments are passed on to `mlflow server`.
set -euo pipefail

fail() { echo "serve.sh: $*" >&2; exit 2; }
require() { [[ -n "${!1:-}" ]] || fail "set $1 ($2)"; }

require MLFLOW_BACKEND_STORE_URI "the tracking database, e.g. postgresql://mlflow:PASSWORD@db:5432/mlflow"
require MLFLOW_ARTIFACTS_DESTINATION "where artifacts go, e.g. s3://bucket/mlartifacts"
require MLFLOW_ALLOWED_HOSTS "the Host headers clients send, e.g. mlflow.example.org,mlflow.mlflow.svc:5000"
require MLFLOW_FLASK_SERVER_SECRET_KEY "a random string, e.g. from: python -c 'import secrets; print(secrets.token_hex(32))'"

if [[ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
  require MLFLOW_AUTH_DATABASE_URI "the users database, e.g. postgresql://mlflow:PASSWORD@db:5432/mlflow_auth"
  [[ "$MLFLOW_AUTH_DATABASE_URI" != *$'\n'* ]] || fail "MLFLOW_AUTH_DATABASE_URI contains a newline"
  # The auth app reads its database from an INI file, and the URI may carry a password: write the
  # file into a folder only this user can read. systemd's RuntimeDirectory= sets RUNTIME_DIRECTORY
  # and removes it when the service stops.
  runtime_dir="${MLFLOW_RUNTIME_DIR:-${RUNTIME_DIRECTORY:-${XDG_RUNTIME_DIR:-/tmp}/mlflow-server-$(id -u)}}"
  (umask 077 && mkdir -p "$runtime_dir")
  [[ -d "$runtime_dir" && ! -L "$runtime_dir" && -O "$runtime_dir" ]] \
    || fail "$runtime_dir is not a folder owned by $(id -un)"
  chmod 700 "$runtime_dir"
  export MLFLOW_AUTH_CONFIG_PATH="$runtime_dir/basic_auth.ini"
  # configparser expands '%': a percent-encoded password must reach the file as '%%'.
  # MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD take precedence over the file, and
  # the password stays out of it.
  # Every request checks the password against a scrypt hash (~0.1 s of CPU and 32 MiB each): a
  # sweep's trials logging in parallel would queue on it. The cache trusts a checked password for
  # a minute instead, so a changed password or a deleted user still works for up to that long.
  (umask 077 && cat > "$MLFLOW_AUTH_CONFIG_PATH") <<EOF
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI//%/%%}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
EOF
  chmod 600 "$MLFLOW_AUTH_CONFIG_PATH"  # in case an older copy was created with a wider mode
fi

# MLflow's server-side job runner (GenAI scorers, trace rollups) starts a pool of worker processes
# that poll the database; sweeper logs metrics, params and artifacts and needs none of it.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

# The store URIs stay in the environment, where `mlflow server` reads them, rather than on the
# command line, which every local user can read in `ps`.
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
exec "${MLFLOW_BIN:-mlflow}" server \
  --app-name basic-auth \
  --serve-artifacts \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}" \
  --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" \
  "$@"
