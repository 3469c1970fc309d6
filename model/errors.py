"""The leukoscreen error hierarchy.

Every error a user can cause (a bad file, a bad config key, a missing checkpoint) is a
:class:`LeukoscreenError`. Each subclass also inherits the builtin it refines, so callers that
already catch ``OSError`` or ``ValueError`` keep working (the zarr-python v3 pattern). Messages
start with the offending path or key and say what was expected and what was found; the CLI prints
``str(err)`` on one line and exits with status 2. Any other exception is a bug and keeps its
traceback.

This module lives in ``leukoscreen.model`` because the dependency direction is
``workflows -> pipeline -> model``: the lowest layer owns what every layer shares.
"""

from __future__ import annotations


class LeukoscreenError(Exception):
    """Base class of every error caused by input rather than by a bug."""


class ConfigError(LeukoscreenError, ValueError):
    """A config file or override has an unknown key, a wrong type or invalid syntax."""


class UsageError(LeukoscreenError, ValueError):
    """A command-line argument is invalid in a way the parser cannot see (wrong combination)."""


class SlideReadError(LeukoscreenError, OSError):
    """A slide file is missing, unreadable, or not a slide format leukoscreen reads."""


class MissingMppError(SlideReadError):
    """A slide carries no microns-per-pixel and none was given."""


class OutputExistsError(LeukoscreenError, FileExistsError):
    """An output store exists and neither resume nor overwrite was asked for."""


class OutputError(LeukoscreenError, OSError):
    """An output location cannot be written, or an existing store does not match this run."""


class CheckpointError(LeukoscreenError, OSError):
    """A checkpoint is missing, fails its sha256 check, or holds another architecture."""


class DataError(LeukoscreenError, ValueError):
    """A training/evaluation data folder is empty or holds images and masks that disagree."""


class StoreLockedError(OutputError):
    """Another run holds the writer lock of the store this run would write."""


class SlideTimeoutError(LeukoscreenError, TimeoutError):
    """A slide's run went past its time limit (``leukoscreen batch --timeout``)."""
