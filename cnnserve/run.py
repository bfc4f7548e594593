"""`cnnserve run`: the main job. Trains the default models into the repository when missing, then serves it.

Takes the same flags as `cnnserve serve`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cnnserve.service.edge.cli import main as serve_main
from cnnserve.service.edge.cli import settings_from_args


def main(argv: Sequence[str]) -> int:
    settings = settings_from_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from cnnserve.training.defaults import ensure_default_models  # torch is needed only here, never by the server

    ensure_default_models(settings.model_repository)
    return serve_main(argv)
