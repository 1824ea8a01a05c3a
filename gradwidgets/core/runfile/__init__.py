"""Run files: per-layer gradient statistics of a training run, appended while it trains, read while it grows.

Why this format (a binary file of framed, checksummed records):

* **appendable**: a logged step is one write of one record at the end of the file; nothing before it is touched,
  so writing costs the same at step 10 and at step 10 million;
* **readable while written**: a reader keeps its offset and asks for what follows; a record it sees half
  written fails its length or checksum check and is read again later;
* **crash-safe**: a run killed mid-write leaves at most one torn record at the end; readers stop before it, and
  a writer that resumes the file (``mode="a"``) cuts it off first. A failed write (a full disk) is cut off at
  once, so the file stays readable with every record before and after it;
* **recoverable**: every record starts with a sync marker and carries checksums of its frame and its payload;
  a closed file ends with an end record. Damage is an error naming its byte offset (also a record that runs
  past the end of a finished file), and ``load_run(path, salvage=True)`` recovers every intact record after it;
* **versioned**: the first 8 bytes are ``GWRUN\\0`` and the format version (checked before anything else is
  read); a newer version than this reader knows is refused with :class:`RunFileVersionError`, never misread.
  Version 1 files (no sync markers) are still read;
* **exact and compact**: numbers are float64 bytes (what the probe measured, bit for bit), and an array is
  written only when it changed since the previous record, so a 50-layer record is under 1 KB.

Bounded size: the writer keeps the newest ``keep_recent`` records at full resolution and thins everything older
to at most ``keep_recent`` records (their losses are averaged into the records kept). The file never holds more
than ``3 * keep_recent`` records: at that, the writer rewrites it (renamed over the old one atomically) down to
``2 * keep_recent``. Readers notice the rename and start over.

Record layout (version 2): ``sync (4 bytes) | tag (2) | payload length (u32) | crc32 of payload (u32) | crc32 of
the 14 bytes before (u32) | payload``. Tags: ``RH`` the header (JSON: layer names, kinds, roles, blocks,
parameter counts, user metadata), ``RS`` a step (``u32 json length | JSON | raw array bytes``), ``RL`` losses
after the last step, ``RE`` the end. Modules: :mod:`.format` (bytes and checked codec), :mod:`.record`
(:class:`RunRecord`), :mod:`.reader`, :mod:`.writer`, :mod:`.lock`, :mod:`.run` (:class:`Run`, :func:`load_run`).
"""

from __future__ import annotations

from .format import (
    FORMAT_VERSION,
    MAGIC,
    SUFFIX,
    NotARunFileError,
    RunFileError,
    RunFileLockedError,
    RunFileVersionError,
)
from .lock import lock_owner, writer_alive
from .reader import RunReader
from .record import LAYOUT_FIELDS, RunRecord, split_stats
from .run import Run, find_runs, iter_records, load_run
from .writer import DEFAULT_KEEP_RECENT, MAX_MERGED_LOSSES, RunWriter, thin

__all__ = [
    "DEFAULT_KEEP_RECENT",
    "FORMAT_VERSION",
    "LAYOUT_FIELDS",
    "MAGIC",
    "MAX_MERGED_LOSSES",
    "SUFFIX",
    "NotARunFileError",
    "Run",
    "RunFileError",
    "RunFileLockedError",
    "RunFileVersionError",
    "RunReader",
    "RunRecord",
    "RunWriter",
    "find_runs",
    "iter_records",
    "load_run",
    "lock_owner",
    "split_stats",
    "thin",
    "writer_alive",
]
