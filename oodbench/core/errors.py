"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations


class OodbenchError(Exception):
    """A user-facing error: the message names the file, line or key and what to do."""

    exit_code = 2


class ParamsError(OodbenchError):
    """A params.yaml key is unknown, missing or of the wrong type."""


class DataError(OodbenchError):
    """A datalist, image, manifest, feature shard or array is bad."""
