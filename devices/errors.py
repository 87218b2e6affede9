"""Errors raised by the pure decoders in :mod:`devices`.

Every malformed input raises a subclass of :class:`DecodeError`; the ingest loop is
the one place that catches it, counts it and stores the payload in ``dead_letter``.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """The payload is not a valid message of the format it was sent as."""


class FrameError(DecodeError):
    """The bytes do not form a whole frame (bad length, missing delimiter, truncated)."""


class ChecksumError(DecodeError):
    """The frame is whole but its checksum or CRC does not match."""


class FieldError(DecodeError):
    """A field is missing, has the wrong type or a value out of its range."""
