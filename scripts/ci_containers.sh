#!/usr/bin/env bash
# CI stage for the container tests (`pytest -m containers`): brings up a Docker engine, Compose v2 and hadolint
# with the shared tool (../shared/tools/containers.sh: no registry is reachable, so it also builds the stand-in
# base image), runs the tests, and stops the engine it started. Prints the time of each phase; the stage is
# budgeted at ~25 minutes on a 2-core machine. Needs .venv (make test creates it) and root.
set -euo pipefail
cd "$(dirname "$0")/.."
containers=${CONTAINERS_TOOL:-../shared/tools/containers.sh}
state=${CI_CONTAINERS_DIR:-/var/cache/ci-containers}
stage_start=$SECONDS

# dockerd refuses to start over the pid file of one that died without cleaning up.
if [ -s /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi

stop_engine() {
  local pid=""
  [ -s "$state/dockerd.pid" ] && pid=$(cat "$state/dockerd.pid")
  bash "$containers" down
  # wait for the engine `up` started to exit, so that a following `up` finds no pid file of it
  if [ -n "$pid" ]; then
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
}

bash "$containers" up
trap stop_engine EXIT
echo "ci_containers: engine, compose, hadolint and base image ready in $((SECONDS - stage_start))s"

tests_start=$SECONDS
status=0
.venv/bin/pytest -m containers -q --durations=5 || status=$?
echo "ci_containers: tests took $((SECONDS - tests_start))s; whole stage $((SECONDS - stage_start))s"
exit "$status"
