"""Runnable examples of grctl (``python -m examples.demo``)."""
