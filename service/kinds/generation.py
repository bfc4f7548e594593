"""The generation kind (contracts/generation.py): latents in, images out, and the `truncation` request parameter.

Each request's latents are scaled by its own factor after decoding and before the batcher merges requests, so
batch-mates keep theirs; a request that names none gets the config's `default_truncation`. The image output is sent
as PNG files on request (the base kind's).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from cnnserve.contracts import generation
from cnnserve.service.errors import InvalidInput, ModelLoadError
from cnnserve.service.kinds.base import Kind, Plan
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import DecodedRequest
from cnnserve.service.wire.requested import parameter_value

TRUNCATION = generation.TRUNCATION_PARAMETER


class GenerationKind(Kind):
    name = "generation"
    tasks = generation.TASKS
    own_parameters: ClassVar[frozenset[str]] = frozenset({TRUNCATION})

    def __init__(self, spec: ModelSpec, config_path: Path, settings: Settings) -> None:
        super().__init__(spec, config_path, settings)
        latent = spec.inputs_by_name.get(generation.LATENT_INPUT)
        self.latent: str | None = latent.name if latent is not None else None
        """None: a generator without the contract's latent input, which truncation cannot apply to."""
        try:
            self.default_factor = generation.default_truncation(spec.parameters)
        except ValueError as err:
            raise ModelLoadError(
                f"{config_path}: key 'parameters.{generation.DEFAULT_TRUNCATION_PARAMETER}': {err}"
            ) from None

    def prepare(self, plan: Plan, decoded: DecodedRequest) -> Plan:
        """The latent scaled by the request's truncation, else the model's default; untouched when the factor is 1."""
        parameters = plan.request.parameters
        asked = bool(parameters) and TRUNCATION in parameters  # `in` first: indexing a protobuf map inserts the key
        if self.latent is None:
            if asked:
                raise InvalidInput(f"parameter {TRUNCATION!r}: model {self.spec.name!r} has no latent input")
            return plan
        factor = self.default_factor
        if asked:
            try:
                factor = generation.parse_truncation(parameter_value(parameters[TRUNCATION]))
            except ValueError as err:
                raise InvalidInput(f"parameter {TRUNCATION!r}: {err}") from None
        if factor != generation.NO_TRUNCATION:
            latent = decoded.inputs[self.latent]  # may be a read-only view of the request's bytes: scale a copy
            decoded.inputs = {
                **decoded.inputs,
                self.latent: np.multiply(latent, np.float32(factor), dtype=latent.dtype),
            }
        return plan
