#!/usr/bin/env bash
# CI stage for the container tests (`pytest -m containers`): brings up a Docker engine, Compose v2 and hadolint
# with the shared tool (../shared/tools/containers.sh: no registry is reachable, so it also builds the stand-in
# base image), runs the tests, and stops the engine it started. Prints the time of each phase; the stage is
# budgeted at ~25 minutes on a 2-core machine. Needs .venv (make test creates it) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
containers=${CONTAINERS_TOOL:-../shared/tools/containers.sh}
stage_start=$SECONDS

bash "$containers" up
trap 'bash "$containers" down' EXIT
echo "ci_containers: engine, compose, hadolint and base image ready in $((SECONDS - stage_start))s"

tests_start=$SECONDS
status=0
.venv/bin/pytest -m containers -q --durations=5 || status=$?
echo "ci_containers: tests took $((SECONDS - tests_start))s; whole stage $((SECONDS - stage_start))s"
exit "$status"
