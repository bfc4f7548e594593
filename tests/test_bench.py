"""`cnnserve bench` against a real server: unary and streaming calls, the in-process comparison, server CPU."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from cnnserve.benchmarks.bench import main as bench_main
from cnnserve.benchmarks.in_process import paced_in_process
from tests import onnx_models
from tests.conftest import ServerThread

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path: Path, start_server: object) -> ServerThread:
    onnx_models.write_classifier(tmp_path / "repo")
    onnx_models.write_conditional_generator(tmp_path / "repo")
    return start_server(tmp_path / "repo")  # type: ignore[operator,no-any-return]


def rows(output: str) -> list[list[str]]:
    """The table's data rows: lines that start with a concurrency level."""
    return [line.split() for line in output.splitlines() if line.strip() and line.split()[0].isdigit()]


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_bench_prints_served_raw_ratio_and_server_cpu(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str], streaming: bool
) -> None:
    model_file = tmp_path / "repo" / "classifier" / "1" / "model.onnx"
    argv = [
        "--url",
        server.grpc_address,
        "--model",
        "classifier",
        "--concurrency",
        "1,4",
        "--duration-s",
        "0.5",
        "--warmup-s",
        "0.2",
        "--model-file",
        str(model_file),
        "--threads",
        "1",
        "--server-pid",
        str(os.getpid()),
    ]  # the server runs in this process
    assert bench_main([*argv, *(["--streaming"] if streaming else [])]) == 0
    output = capsys.readouterr().out
    assert f"calls={'streaming' if streaming else 'unary'}" in output and "failed" not in output
    table = rows(output)
    assert [row[0] for row in table] == ["1", "4"]
    for row in table:
        served, p50, p99, raw, ratio, cpu = (float(row[i]) for i in (1, 2, 4, 6, 8, 9))
        assert served > 0 and 0 < p50 <= p99 and raw > 0 and cpu > 0
        assert ratio == pytest.approx(served / raw, rel=0.01, abs=0.01)
    assert [int(float(row[5])) for row in table] == [1, 4]  # in-process batch = concurrency x batch size
    (paced,) = [line for line in output.splitlines() if "paced in-process" in line]  # one client's level only
    numbers = re.search(
        r"a run every ([\d.]+) ms.* p50 ([\d.]+) ms, cpu ([\d.]+) ms/run; served p50 less it "
        r"(-?[\d.]+) ms, server cpu less it (-?[\d.]+) ms/req",
        paced,
    )
    assert numbers is not None, paced
    pause, p50, cpu = (float(numbers[i]) for i in (1, 2, 3))
    assert pause >= 0 and p50 > 0 and cpu > 0
    assert float(numbers[4]) == pytest.approx(float(table[0][2]) - p50, abs=0.011)  # the served p50 row, rounded


def test_paced_in_process_pauses_between_single_runs(tmp_path: Path) -> None:
    onnx_models.write_classifier(tmp_path / "repo")
    inputs = {"images": np.zeros((1, 1, 4, 4), np.float32)}
    model_file = tmp_path / "repo" / "classifier" / "1" / "model.onnx"
    paced = paced_in_process(model_file, inputs, 0.3, 1, False, pause_s=0.01)
    assert 5 <= paced.runs <= 31  # at most one run per 10 ms pause in 0.3 s
    assert 0 < paced.p50_ms < 10 and paced.cpu_ms_per_run > 0


def test_bench_fills_integer_inputs_of_a_two_input_model(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--url",
        server.grpc_address,
        "--model",
        "cgen",
        "--concurrency",
        "2",
        "--duration-s",
        "0.3",
        "--warmup-s",
        "0.1",
        "--batch-size",
        "3",
        "--streaming",
    ]
    assert bench_main(argv) == 0
    output = capsys.readouterr().out
    assert "failed" not in output and rows(output)[0][0] == "2"


def test_bench_http_compares_rest_binary_and_json_with_grpc(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--protocol",
        "http",
        "--url",
        server.grpc_address,
        "--rest-url",
        server.rest_address,
        "--model",
        "classifier",
        "--concurrency",
        "1,4",
        "--duration-s",
        "0.4",
        "--warmup-s",
        "0.1",
        "--server-pid",
        str(os.getpid()),
    ]
    assert bench_main(argv) == 0
    output = capsys.readouterr().out
    assert "failed" not in output and "decoded by the server's codec in" in output
    protocols = (["grpc"], ["rest-bin"], ["rest-json"])
    table = [line.split() for line in output.splitlines() if line.split()[:1] in protocols]
    assert [(row[0], row[1]) for row in table] == [
        (p, c) for c in ("1", "4") for p in ("grpc", "rest-bin", "rest-json")
    ]
    for row in table:
        served, cpu, vs_grpc = float(row[2]), float(row[6]), float(row[7])
        assert served > 0 and cpu > 0 and vs_grpc > 0


def test_bench_compares_output_sets_of_a_variable_size_model(
    tmp_path: Path, start_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_models.write_segmenter(tmp_path / "repo", work=1, dim=8)
    server: ServerThread = start_server(tmp_path / "repo")  # type: ignore[operator]
    model_file = tmp_path / "repo" / "segmenter" / "1" / "model.onnx"
    argv = ["--url", server.grpc_address, "--model", "segmenter", "--concurrency", "1,2", "--duration-s", "0.3",
            "--warmup-s", "0.1", "--sizes", "64,64", "--outputs", "boxes,scores,classes;boxes,scores,classes,mask",
            "--model-file", str(model_file), "--threads", "1"]  # fmt: skip
    assert bench_main(argv) == 0
    output = capsys.readouterr().out
    assert "failed" not in output and "x first" in output
    table = rows(output)
    assert [(row[0], row[-1]) for row in table] == [
        (c, outputs) for c in ("1", "2") for outputs in ("boxes,scores,classes", "boxes,scores,classes,mask")
    ]
    for row in table:
        served, raw, ratio, versus_first = float(row[1]), float(row[6]), float(row[8]), float(row[-2])
        assert served > 0 and raw > 0 and ratio == pytest.approx(served / raw, rel=0.01, abs=0.01)
        assert versus_first > 0
    assert [float(row[-2]) for row in table[::2]] == [1.0, 1.0]  # each level's first set is its own baseline


def test_bench_measures_the_transport_floor_of_the_echo_server(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/echo_server.py answers ModelInfer and ModelMetadata only: bench must still run against it (it
    is the floor every benchmark is judged by), without the in-process side."""
    with socket.socket() as probe:  # a free port for the script, which takes a number, not 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    echo = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "echo_server.py"), str(port)],
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
        argv = ["--url", f"127.0.0.1:{port}", "--model", "echo", "--concurrency", "1,2", "--duration-s", "0.3",
                "--warmup-s", "0.1", "--server-pid", str(echo.pid)]  # fmt: skip
        assert bench_main(argv) == 0
    finally:
        echo.terminate()
        echo.wait(10)
    table = rows(capsys.readouterr().out)
    assert [row[0] for row in table] == ["1", "2"] and all(float(row[1]) > 0 for row in table)
