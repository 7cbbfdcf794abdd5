"""One logger for the package, visible on stderr whether or not dbt runs it."""

from __future__ import annotations

import logging
import sys

_LOGGER_NAME = "text_features"


def get_logger() -> logging.Logger:
    """Return the package logger, with a stderr handler added once.

    dbt does not route the root Python logger to its own output, so a plain
    ``logging.getLogger`` would be silent inside ``dbt build``.
    """
    logger = logging.getLogger(_LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s text-features %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
