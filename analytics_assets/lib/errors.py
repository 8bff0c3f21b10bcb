"""Every error the platform raises on purpose, in one module that every layer imports.

Each message is one line a person can act on, and never holds a secret.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting a user gave is wrong; the message says which and what to do."""


class FeedError(RuntimeError):
    """The feed cannot do what was asked; the message says what to do."""


class SourceUnavailable(FeedError):
    """The connection to the source broke (restart, crash, failover, network). Nothing after the
    last committed batch was applied; the next ingest resumes from the warehouse's positions."""


class DecodeError(RuntimeError):
    """The byte stream is not the pgoutput protocol this decoder understands."""


class BinaryValueUnsupported(DecodeError):
    """A binary pgoutput value of a type the decoder reads only as text: read it as text."""


class EnvelopeError(ValueError):
    """A record the decoder cannot read; the message names topic, partition and offset."""


class IngestBusy(RuntimeError):
    """Another ingest holds the feed (the replication slot) or the warehouse file; the one-line
    message says which process. Nothing was applied: run again once it has finished."""


class WarehouseLocked(IngestBusy):
    """Another process kept the warehouse file locked for longer than the lock timeout."""


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be read right now; the message says why (never a secret)."""


class WarehouseBusy(WarehouseUnavailable):
    """The DuckDB file is locked by a writer (a run): try again later."""
