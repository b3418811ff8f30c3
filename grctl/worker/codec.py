"""Compatibility module (BEHAVIOUR.md §1.1): the codec lives in `grctl.codec`."""

from grctl.codec import CodecRegistry, default_codec

__all__ = ["CodecRegistry", "default_codec"]
