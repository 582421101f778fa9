#!/usr/bin/env bash
# The ARMoR tracking server: SQLite backend + local artifacts by default (see mlflow/README.md).
#
#   mlflow/server.sh [--workspace DIR] [--port P] [--host H] [--workers N]
#                    [--backend-store-uri URI] [--artifacts-destination URI] [--basic-auth]
#
# Then point every process at it: export MLFLOW_TRACKING_URI=http://HOST:PORT
# The script execs mlflow, so its PID is the server's: stop it with `kill PID`.
set -euo pipefail

workspace=workspace
host=127.0.0.1
port=5000
workers=1
backend=""
artifacts=""
app=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workspace) workspace=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --backend-store-uri) backend=$2; shift 2 ;;
    --artifacts-destination) artifacts=$2; shift 2 ;;
    --basic-auth) app=(--app-name basic-auth); shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "mlflow/server.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -z $backend || -z $artifacts ]]; then
  mkdir -p "$workspace"
  workspace=$(cd "$workspace" && pwd)
fi
# sqlite:/// followed by an absolute path: four slashes in all (three means a relative path).
backend=${backend:-sqlite:///$workspace/mlflow.db}
artifacts=${artifacts:-$workspace/mlartifacts}

# The job-execution subsystem (MLflow 3's background jobs) doubles start time and process count;
# ARMoR submits no server jobs. Telemetry stays off on machines without internet.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}

mlflow_bin=${MLFLOW_BIN:-mlflow}
exec "$mlflow_bin" server --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
  --host "$host" --port "$port" --workers "$workers" ${app[@]+"${app[@]}"}
