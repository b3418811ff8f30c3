"""Logging helpers (`setup_logging`, `get_logger`), as the original SDK offered them."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(levelname)s %(asctime)s.%(msecs)03d [%(module)s.%(funcName)s:%(lineno)d] %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stdout with a compact format; keep librdkafka-related noise at WARNING."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """A logger set to DEBUG."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    return logger
