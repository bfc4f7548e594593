"""ModelStatistics replies (Triton's statistics extension) from a loaded version's counters."""

from __future__ import annotations

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.registry.served import Duration, ServedModel


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(model: ServedModel) -> pb.ModelStatistics:
    stats = model.stats
    return pb.ModelStatistics(
        name=model.name,
        version=str(model.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=pb.StatisticDuration(count=b.count, ns=b.compute_input_ns),
                compute_infer=pb.StatisticDuration(count=b.count, ns=b.compute_infer_ns),
                compute_output=pb.StatisticDuration(count=b.count, ns=b.compute_output_ns),
            )
            for size, b in sorted(stats.batch_stats.items())
        ],
    )
