#!/usr/bin/env bash
# Run Triton's perf_analyzer against a cnnserve (or any KServe v2 / Triton) gRPC endpoint.
#
#   scripts/perf_analyzer.sh INSTALL_DIR URL MODEL [perf_analyzer options...]
#   e.g. scripts/perf_analyzer.sh /opt/perf_analyzer 127.0.0.1:8001 classifier -b 4 --concurrency-range 1:8:2
#
# INSTALL_DIR becomes a virtual environment holding perf_analyzer; it is built only when absent (idempotent), and is
# kept apart from the project's environment on purpose: tritonclient 2.51, the last release whose bundled binary runs
# on glibc 2.36, would pull protobuf 4.x. Only its binary is extracted; it needs Debian's libb64-0d and
# libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12 (loaded, never used: no GPU is needed).
#
# Defaults added unless given: -i grpc, --measurement-interval 2000. Everything after MODEL goes to perf_analyzer.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
dir=$1 url=$2 model=$3
shift 3

TRITONCLIENT_VERSION=2.51.0
PYTHON=${PYTHON:-python3}

install_perf_analyzer() {
    local venv=$1
    if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
        local sudo=
        [[ $(id -u) -eq 0 ]] || sudo=sudo
        $sudo apt-get update -q
        $sudo apt-get install -y -q libb64-0d
    fi
    [[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q nvidia-cuda-runtime-cu12
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    "$venv/bin/pip" download -q --no-deps -d "$tmp" "tritonclient==$TRITONCLIENT_VERSION"
    (cd "$tmp" && "$venv/bin/python" -m zipfile -e tritonclient-*.whl x)
    install -m 755 "$tmp/x/tritonclient-$TRITONCLIENT_VERSION.data/data/bin/perf_analyzer" "$venv/bin/perf_analyzer.bin"
    local cudart
    cudart=$("$venv/bin/python" -c \
        'import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], "lib"))')
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
        "$cudart" "$venv/bin/perf_analyzer.bin" > "$venv/bin/perf_analyzer.tmp"
    chmod 755 "$venv/bin/perf_analyzer.tmp"
    mv "$venv/bin/perf_analyzer.tmp" "$venv/bin/perf_analyzer"  # last step: its presence means a finished install
}

pa=$dir/bin/perf_analyzer
if ! { [[ -x $pa ]] && "$pa" --version >/dev/null 2>&1; }; then
    echo "perf_analyzer.sh: installing perf_analyzer (tritonclient $TRITONCLIENT_VERSION) into $dir" >&2
    install_perf_analyzer "$dir"
    "$pa" --version >/dev/null 2>&1
fi

args=("$@")
has() { local a; for a in "${args[@]}"; do [[ $a == "$1" || $a == "$1="* ]] && return 0; done; return 1; }
has -i || has --protocol || args=(-i grpc "${args[@]}")
has --measurement-interval || has -p || args+=(--measurement-interval 2000)

set -x
exec "$pa" -m "$model" -u "$url" "${args[@]}"
