"""The image-to-image kind (a style model, contracts/style.py): a photo of any size padded to the stride, the answer
cropped back to the photo's size (padding.py) and sent as PNG files on request; at the REST door, a file in and its
answer out as a PNG (Accept: image/png) or the output tensor as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cnnserve.contracts import segmentation as contract
from cnnserve.contracts import style
from cnnserve.service.errors import InvalidInput
from cnnserve.service.execution.images import DecodedImages, ImageWorkers
from cnnserve.service.kinds import padding
from cnnserve.service.kinds.base import INFER, PNG_PARAMETERS, FileRequest, Kind, Plan
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Array, DecodedRequest


class ImageToImageKind(Kind):
    name = "image_to_image"
    tasks = (style.TASK,)
    precedence = 20

    @classmethod
    def describes(cls, spec: ModelSpec) -> bool:
        """Outputs in input pixels (postprocessing.spatial) and no mask or boxes: a picture for a picture."""
        return contract.POSTPROCESSING_SPATIAL in spec.postprocessing

    def __init__(self, spec: ModelSpec, config_path: Path, settings: Settings) -> None:
        super().__init__(spec, config_path, settings)
        self.spatial = padding.from_spec(spec, config_path)

    async def finish(self, plan: Plan, outputs: dict[str, Array], decoded: DecodedRequest,
                     images: DecodedImages | None, workers: ImageWorkers) -> dict[str, Array]:  # fmt: skip
        if images is not None and images.size is not None and self.spatial is not None:
            outputs = padding.crop(outputs, self.spatial, images.size)  # padded files: back to their own size
        return await super().finish(plan, outputs, decoded, images, workers)

    def file_request(self, operation: str, query: Mapping[str, str], png: bool) -> FileRequest:
        """The image output only: as a PNG at the file's size when accepted, else as the tensor."""
        if operation != INFER:
            return super().file_request(operation, query, png)
        if self.png_output is None:
            raise InvalidInput(f"model {self.spec.name!r} has no image output (postprocessing.output) to answer with")
        return FileRequest((self.png_output,), PNG_PARAMETERS if png else {})
