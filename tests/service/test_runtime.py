"""ONNX Runtime sessions: provider choice and fallback, session options, warm-up, threaded runs and timings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cnnserve.service.errors import InvalidInput, ModelLoadError, ModelNotReady
from cnnserve.service.execution.runtime import (
    CPU,
    Runtime,
    Tensors,
    WarmupFeed,
    session_options,
    warm_up_batch_sizes,
)
from cnnserve.service.types import ComputeTimes, DynamicBatching, ModelSpec, SessionOptions, TensorSpec
from tests import onnx_models
from tests.service.graphs import conv_any_size, fixed_batch, save


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(root)
    onnx_models.write_conditional_generator(root)
    onnx_models.write_corrupt(root)
    return root


def spec_of(runtime: Runtime, max_batch_size: int = 8) -> ModelSpec:
    return ModelSpec("m", "onnxruntime_onnx", max_batch_size, runtime.inputs, runtime.outputs)


@pytest.mark.parametrize("preference", [("cuda", "cpu"), ("cuda",), ("tensorrt", "cuda"), ("rocm", "cpu"), ()])
def test_unavailable_providers_fall_back_to_cpu(
    repo: Path, preference: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # this machine: CPU-only onnxruntime
    with caplog.at_level(logging.INFO):
        runtime = Runtime(repo / "classifier" / "1" / "model.onnx", providers=preference)
    assert runtime.provider == CPU
    assert f"provider={CPU}" in caplog.text  # the provider in use is logged at load
    runtime.close()


def test_session_options_follow_the_spec() -> None:
    so = session_options(SessionOptions(intra_op_threads=2, inter_op_threads=1, graph_optimization_level="basic"))
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (2, 1)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert (
        session_options(SessionOptions(allow_spinning=True)).get_session_config_entry("session.intra_op.allow_spinning")
        == "1"
    )


def test_graph_is_read_with_symbolic_dims_as_minus_one(repo: Path) -> None:
    runtime = Runtime(repo / "cgen" / "1" / "model.onnx")
    assert runtime.inputs == (TensorSpec("latent", "FP32", (-1, 8)), TensorSpec("class", "INT64", (-1,)))
    assert runtime.outputs == (TensorSpec("images", "FP32", (-1, 1, 2, 4)),)
    runtime.close()


def test_corrupt_model_is_a_load_error(repo: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        Runtime(repo / "broken" / "1" / "model.onnx")


def test_runs_match_a_direct_session_across_instances(repo: Path) -> None:
    path = repo / "cgen" / "1" / "model.onnx"
    reference = ort.InferenceSession(str(path), providers=[CPU])
    runtime = Runtime(path, instance_count=2)
    assert runtime.instance_count == 2
    rng = np.random.default_rng(0)
    requests: list[Tensors] = [
        {"latent": rng.standard_normal((n, 8)).astype(np.float32), "class": rng.integers(0, 10, n).astype(np.int64)}
        for n in (1, 3, 8, 2, 5, 7)
    ]

    async def run_all() -> list[tuple[Tensors, ComputeTimes]]:
        return await asyncio.gather(*(runtime.run_on_thread(r) for r in requests))

    for request, (outputs, times) in zip(requests, asyncio.run(run_all()), strict=True):
        (expected,) = reference.run(None, request)
        np.testing.assert_array_equal(outputs["images"], expected)
        assert min(times.input_s, times.infer_s, times.output_s) >= 0 and times.infer_s > 0
    runtime.close()
    with pytest.raises(ModelNotReady):
        asyncio.run(runtime.run_on_thread(requests[0]))


def test_non_contiguous_inputs_are_accepted(repo: Path) -> None:
    runtime = Runtime(repo / "classifier" / "1" / "model.onnx")
    images = np.random.default_rng(1).standard_normal((4, 1, 4, 8)).astype(np.float32)[..., ::2]
    outputs, _ = asyncio.run(runtime.run_on_thread({"images": images}))
    np.testing.assert_allclose(outputs["logits"], onnx_models.classifier_reference(images), rtol=1e-5, atol=1e-5)
    runtime.close()


def test_warm_up_runs_batch_one_and_the_largest_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(fixed_batch(tmp_path / "model.onnx"))  # accepts batch 1 only
    batching = replace(spec_of(runtime), inputs=(TensorSpec("x", "FP32", (-1, 3)),))
    runtime.warm_up(replace(batching, max_batch_size=1))
    assert set(runtime.warm_up_times) == {1} and "warmup_failed" not in caplog.text
    with caplog.at_level(logging.WARNING):
        runtime.warm_up(batching)  # max_batch_size 8 is tried too: it fails, which only warns
    assert "event=warmup_failed" in caplog.text and "batch=8" in caplog.text
    assert set(runtime.warm_up_times) == {1}  # estimates only from what ran
    runtime.close()


def test_warm_up_feeds_strings_a_number_cast_accepts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Triton's simple_string casts its BYTES inputs to INT32: an empty string would stop it ("stoll")."""
    onnx_models.write_simple_string(tmp_path)
    runtime = Runtime(tmp_path / "simple_string" / "1" / "model.onnx")
    with caplog.at_level(logging.WARNING):
        runtime.warm_up(spec_of(runtime))
    assert "warmup_failed" not in caplog.text and set(runtime.warm_up_times) == {1, 8}
    runtime.close()


def test_warm_up_samples_run_as_given_and_fail_the_load_naming_the_sample(tmp_path: Path) -> None:
    onnx_models.write_simple_string(tmp_path)
    runtime = Runtime(tmp_path / "simple_string" / "1" / "model.onnx")
    numbers = np.full((2, 16), b"7", dtype=object)
    runtime.warm_up(spec_of(runtime), [WarmupFeed("sevens", 2, {"INPUT0": numbers, "INPUT1": numbers}, runs=2)])
    assert set(runtime.warm_up_times) == {2}
    empty = np.full((1, 16), b"", dtype=object)  # Triton's zero_data for strings: what a Cast cannot parse
    with pytest.raises(ModelLoadError, match="failed to run warmup sample 'empty'"):
        runtime.warm_up(spec_of(runtime), [WarmupFeed("empty", 1, {"INPUT0": empty, "INPUT1": empty})])
    runtime.close()


def test_warm_up_covers_every_batch_size_the_batcher_aims_at(tmp_path: Path) -> None:
    runtime = Runtime(fixed_batch(tmp_path / "model.onnx"))
    spec = replace(spec_of(runtime), max_batch_size=32,
                   dynamic_batching=DynamicBatching(preferred_batch_sizes=(4, 16)))  # fmt: skip
    assert warm_up_batch_sizes(spec) == [1, 4, 16, 32]
    assert warm_up_batch_sizes(replace(spec, dynamic_batching=None)) == [1, 32]
    assert warm_up_batch_sizes(replace(spec, max_batch_size=0)) == [1]
    runtime.close()


def test_warm_up_with_guessed_dims_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(conv_any_size(tmp_path / "model.onnx"))
    with caplog.at_level(logging.WARNING):
        runtime.warm_up(spec_of(runtime))  # H and W guessed as 1: too small for the 3x3 kernel
    assert "warmup_failed" in caplog.text
    sized = spec_of(runtime)
    sized = replace(sized, inputs=(TensorSpec("images", "FP32", (-1, 1, 8, 8)),))
    caplog.clear()
    runtime.warm_up(sized)  # the config's fixed sizes are used
    assert "warmup_failed" not in caplog.text
    runtime.close()


def test_bytes_inputs_reach_the_model_as_utf8_text(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["N"])],
    )
    runtime = Runtime(save(graph, tmp_path / "model.onnx"))
    runtime.warm_up(spec_of(runtime))
    values = np.array([b"", b"a\x00b", "ün".encode()], dtype=object)
    outputs, _ = asyncio.run(runtime.run_on_thread({"text": values}))
    assert outputs["same"].tolist() == ["", "a\x00b", "ün"]
    with pytest.raises(InvalidInput):
        asyncio.run(runtime.run_on_thread({"text": np.array([b"\xff"], dtype=object)}))
    runtime.close()


def test_values_onnx_runtime_refuses_are_invalid_input(repo: Path) -> None:
    """ORT's INVALID_ARGUMENT (here a class index outside the table) is the caller's fault, not a server failure."""
    runtime = Runtime(repo / "cgen" / "1" / "model.onnx")
    latent = np.zeros((2, 8), np.float32)
    with pytest.raises(InvalidInput):
        asyncio.run(runtime.run_on_thread({"latent": latent, "class": np.array([1, 99], np.int64)}))
    outputs, _ = asyncio.run(runtime.run_on_thread({"latent": latent, "class": np.array([1, 9], np.int64)}))
    assert outputs["images"].shape == (2, 1, 2, 4)
    runtime.close()


def test_output_sets_run_on_pruned_sessions_up_to_the_bound_then_on_the_full_one(tmp_path: Path) -> None:
    from cnnserve.service.execution.runtime import MAX_PRUNED_SESSIONS

    folder = onnx_models.write_segmenter(tmp_path)
    runtime = Runtime(folder / "1" / "model.onnx")
    images = np.random.default_rng(0).random((2, 1, 8, 16)).astype(np.float32)
    expected = onnx_models.segmenter_reference(images)
    sets = [{"mask"}, {"boxes"}, {"scores"}, {"classes"}, {"mask", "boxes"}, {"logits"}]

    async def main() -> None:
        for names in sets:
            outputs, _ = await runtime.run_on_thread({"images": images}, frozenset(names))
            assert set(outputs) == names  # only what was asked, whichever session ran it
            for name in names:
                np.testing.assert_allclose(outputs[name], expected[name], atol=1e-4)
        everything, _ = await runtime.run_on_thread({"images": images}, frozenset(expected))
        assert set(everything) == set(expected)

    try:
        asyncio.run(main())
    finally:
        runtime.close()
    assert len(runtime.pruned_nodes) == MAX_PRUNED_SESSIONS  # the fifth set and later run the full session
    total = next(iter(runtime.pruned_nodes.values()))[1]
    assert all(kept < total for kept, _ in runtime.pruned_nodes.values())
    assert frozenset(expected) not in runtime.pruned_nodes  # all outputs: the full session, nothing to prune


def test_a_set_that_prunes_nothing_runs_the_full_session(tmp_path: Path) -> None:
    """Two outputs of one node: asking for one keeps every node, so no second session is built."""
    graph = helper.make_graph(
        [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)],
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2])],
    )  # fmt: skip
    path = tmp_path / "split.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    runtime = Runtime(path)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    try:
        outputs, _ = asyncio.run(runtime.run_on_thread({"x": x}, frozenset({"b"})))
    finally:
        runtime.close()
    assert set(outputs) == {"b"} and runtime.pruned_nodes == {frozenset({"b"}): (1, 1)}
    np.testing.assert_array_equal(outputs["b"], x[:, 2:])


def test_a_run_on_the_loop_uses_instance_zero_on_the_calling_thread(repo: Path) -> None:
    """The synchronous run: the same answer as a threaded one, computed on the caller's thread, its phases timed."""
    runtime = Runtime(repo / "classifier" / "1" / "model.onnx", instance_count=2)
    images = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
    try:
        outputs, times = runtime.run_on_loop({"images": images}, None)
        threaded, _ = asyncio.run(runtime.run_on_thread({"images": images}))
    finally:
        runtime.close()
    np.testing.assert_allclose(outputs["logits"], onnx_models.classifier_reference(images), rtol=1e-5)
    np.testing.assert_array_equal(outputs["logits"], threaded["logits"])
    assert times.infer_s > 0
    with pytest.raises(ModelNotReady):
        runtime.run_on_loop({"images": images}, None)


def test_loop_ready_states_facts_only(tmp_path: Path) -> None:
    """Ready for a run on the loop: sessions open, no thread busy, the output set's session built. Nothing timed."""
    folder = onnx_models.write_segmenter(tmp_path)
    runtime = Runtime(folder / "1" / "model.onnx")
    images = np.zeros((1, 1, 8, 16), np.float32)
    mask = frozenset({"mask"})

    async def main() -> None:
        assert runtime.loop_ready(None) and runtime.loop_ready(frozenset(t.name for t in runtime.outputs))
        assert not runtime.loop_ready(mask)  # its pruned session is not built yet: building it can take ms
        running = asyncio.ensure_future(runtime.run_on_thread({"images": images}, mask))
        await asyncio.sleep(0)  # in the thread now
        assert not runtime.loop_ready(None)  # a session thread is busy
        await running
        assert runtime.loop_ready(mask) and runtime.loop_ready(None)  # right after a run: facts carry no timing

    asyncio.run(main())
    runtime.close()
    assert not runtime.loop_ready(None)
