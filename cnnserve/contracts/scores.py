"""Class scores: the one softmax that turns a classifier's logits into probabilities, wherever they are shown (the
REST classification reply, occlusion maps, the client's top-k, training's report cards)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def softmax(logits: npt.ArrayLike, axis: int = -1) -> npt.NDArray[np.floating[Any]]:
    """Softmax along `axis`, stable for large logits (the maximum is subtracted first). Computes in the input's float
    type (float32 stays float32; integers become float64): callers that need float64 pass float64."""
    values = np.asarray(logits)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    probabilities: npt.NDArray[np.floating[Any]] = shifted / shifted.sum(axis=axis, keepdims=True)
    return probabilities
