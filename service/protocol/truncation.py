"""The truncation request parameter of generators (contracts/generation.py): each request's latents scaled by its
own factor here, after decoding and before the batcher merges requests, so batch-mates keep theirs."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import generation
from cnnserve.service.errors import InvalidInput
from cnnserve.service.protocol.decode import Array
from cnnserve.service.protocol.requested import parameter_value
from cnnserve.service.types import ModelSpec


def truncate_latents(parameters: Mapping[str, pb.InferParameter], spec: ModelSpec, inputs: dict[str, Array]
                     ) -> dict[str, Array]:  # fmt: skip
    """`inputs` with the latent scaled by the request's truncation, else the model's default; unchanged for models
    that are not generators or when the factor is 1. A bad factor is InvalidInput naming the rule."""
    asked = generation.TRUNCATION_PARAMETER in parameters  # `in` first: indexing a protobuf map inserts the key
    if not generation.is_generator(spec.parameters) or generation.LATENT_INPUT not in inputs:
        if asked:
            raise InvalidInput(f"parameter 'truncation': model {spec.name!r} is not a generator with a latent input")
        return inputs
    try:
        if asked:
            factor = generation.parse_truncation(parameter_value(parameters[generation.TRUNCATION_PARAMETER]))
        else:
            factor = _default_factor(spec.parameters.get(generation.DEFAULT_TRUNCATION_PARAMETER))
    except ValueError as err:
        source = "parameter 'truncation'" if asked else f"model {spec.name!r} config default_truncation"
        raise InvalidInput(f"{source}: {err}") from None
    if factor == generation.NO_TRUNCATION:
        return inputs
    latent = inputs[generation.LATENT_INPUT]  # may be a read-only view of the request's bytes: scale into a copy
    return {**inputs, generation.LATENT_INPUT: np.multiply(latent, np.float32(factor), dtype=latent.dtype)}


@lru_cache(maxsize=256)
def _default_factor(value: str | None) -> float:
    """A config's default, parsed once per distinct value rather than on every request that names none."""
    return generation.default_truncation({} if value is None else {generation.DEFAULT_TRUNCATION_PARAMETER: value})
