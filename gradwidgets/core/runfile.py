"""Run files: per-layer gradient statistics of a training run, appended while it trains, read while it grows.

Why this format (a binary file of length-prefixed, checksummed records):

* **appendable**: a logged step is one ``write()`` of one record at the end of the file; nothing before it is
  touched, so writing costs the same at step 10 and at step 10 million;
* **readable while written**: a reader keeps its offset and asks for what follows; a record it sees half
  written (the writer is inside its ``write()``) fails its length or CRC check and is read again later;
* **crash-safe**: a run killed mid-write leaves at most one torn record at the end; readers stop before it, and
  a writer that resumes the file (``mode="a"``) cuts it off first;
* **versioned**: the first 8 bytes are ``GWRUN\\0`` and the format version; a newer version than this reader
  knows is refused with :class:`RunFileVersionError`, never misread;
* **exact and compact**: numbers are float64 bytes (what the probe measured, bit for bit), and an array is
  written only when it changed since the previous record (the costly detail fields change every 20th read),
  so a 50-layer record is under 1 KB. JSON lines would be twice the size and lose bits unless printed with
  ``repr``; numpy's ``.npz`` cannot be appended to.

Bounded size: the writer keeps the newest ``keep_recent`` records at full resolution and thins everything older
to at most ``keep_recent`` records, evenly spread over the old steps (their losses are averaged into the records
kept). The file therefore never holds more than ``3 * keep_recent`` records: when it reaches that, the writer
rewrites it (a new file renamed over the old one atomically) down to ``2 * keep_recent``. Readers notice the
rename and start over.

Record layout: ``tag (2 bytes) | payload length (u32) | crc32 of payload (u32) | payload``. Tag ``RH`` is the
header (JSON: layer names, kinds, roles, blocks, parameter counts, user metadata), written before the first
step; ``RS`` a step: ``u32 json length | JSON (step, scalars, verdict, array specs) | raw array bytes``.
Fields are stored generically: every numpy-array field of :class:`GradientStats` (and every scalar one), so a
field added to the stats is recorded without touching this module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .stats import GradientStats, make_stats

__all__ = [
    "FORMAT_VERSION",
    "LAYOUT_FIELDS",
    "Run",
    "RunFileError",
    "RunFileLockedError",
    "RunFileVersionError",
    "RunReader",
    "RunWriter",
    "find_runs",
    "load_run",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"GWRUN\x00"
PREAMBLE = struct.Struct("<6sH")
RECORD = struct.Struct("<2sII")
JSON_LENGTH = struct.Struct("<I")
TAG_HEADER = b"RH"
TAG_STEP = b"RS"
SUFFIX = ".gwrun"
MAX_RECORD_BYTES = 1 << 30
DEFAULT_KEEP_RECENT = 5000
MAX_MERGED_LOSSES = 64
"""A thinned record carries at most this many loss points (bin means) for the steps it stands in for."""

LAYOUT_FIELDS = ("names", "kinds", "roles", "blocks", "param_count", "aliases")
"""``GradientStats`` fields that describe the model, not a step: stored once, in the header."""


class RunFileError(ValueError):
    """The file is not a run file, or is damaged before its last record."""


class RunFileVersionError(RunFileError):
    """The file was written by a newer gradwidgets (a newer format version) than this one."""


class RunFileLockedError(RuntimeError):
    """Another live process is writing this run file."""


# ---------------------------------------------------------------------------------------------- encoding


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a run file")


def _dumps(obj: Any) -> bytes:
    # NaN/inf are legal here (Python's json writes and reads them); the file is read by this module.
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


def _frame(tag: bytes, payload: bytes) -> bytes:
    return RECORD.pack(tag, len(payload), zlib.crc32(payload)) + payload


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def split_stats(stats: GradientStats) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """``(layout, scalars, arrays)`` of a reading, found by walking the dataclass's fields (so new ones come too)."""
    layout: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if field.name in LAYOUT_FIELDS:
            layout[field.name] = np.asarray(value).tolist() if isinstance(value, np.ndarray) else list(value)
        elif isinstance(value, np.ndarray):
            arrays[field.name] = value
        elif isinstance(value, (bool, int, float, str, np.generic)) or value is None:
            scalars[field.name] = value.item() if isinstance(value, np.generic) else value
    return layout, scalars, arrays


class _StepEncoder:
    """Turns materialized step records into payloads, writing each array only when it changed."""

    def __init__(self) -> None:
        self._previous: dict[str, np.ndarray] = {}
        self._verdict: Any = None

    def encode(self, record: Mapping[str, Any]) -> bytes:
        specs = []
        chunks = []
        for name, value in record["arrays"].items():
            array = np.ascontiguousarray(value)
            if array.dtype.kind == "f":
                array = array.astype("<f8", copy=False)
            elif array.dtype.kind == "b":
                array = array.astype("|b1", copy=False)
            elif array.dtype.kind in "iu":
                array = array.astype("<i8", copy=False)
            else:
                raise ValueError(f"array field {name!r} has unsupported dtype {array.dtype}")
            if _same(array, self._previous.get(name)):
                continue
            self._previous[name] = array
            specs.append([name, array.dtype.str, list(array.shape)])
            chunks.append(array.tobytes())
        for name in ("loss_steps", "losses"):
            # Float steps: a thinned record's loss points are bin means (of steps too).
            array = np.ascontiguousarray(record.get(name, np.zeros(0)), dtype="<f8")
            specs.append([name, array.dtype.str, list(array.shape)])
            chunks.append(array.tobytes())
        head: dict[str, Any] = {
            "step": int(record["step"]),
            "time": float(record.get("time", time.time())),
            "scalars": record.get("scalars", {}),
            "arrays": specs,
        }
        verdict = record.get("verdict")
        if verdict != self._verdict:
            head["verdict"] = verdict
            self._verdict = verdict
        meta = {k: v for k, v in record.items() if k not in ("step", "time", "scalars", "arrays", "verdict",
                                                             "loss_steps", "losses")}
        if meta:
            head["extra"] = meta
        text = _dumps(head)
        return JSON_LENGTH.pack(len(text)) + text + b"".join(chunks)


class _StepDecoder:
    """The inverse: payloads to materialized records (arrays carried forward from earlier records)."""

    def __init__(self) -> None:
        self._current: dict[str, np.ndarray] = {}
        self._verdict: Any = None

    def decode(self, payload: bytes) -> dict[str, Any]:
        (size,) = JSON_LENGTH.unpack_from(payload, 0)
        head = json.loads(payload[JSON_LENGTH.size : JSON_LENGTH.size + size])
        offset = JSON_LENGTH.size + size
        record: dict[str, Any] = {"loss_steps": np.zeros(0), "losses": np.zeros(0)}
        for name, dtype, shape in head["arrays"]:
            count = int(np.prod(shape)) if shape else 1
            array = np.frombuffer(payload, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
            offset += array.nbytes
            array = array.astype(array.dtype.newbyteorder("="))
            if name in ("loss_steps", "losses"):
                record[name] = array
            else:
                self._current[name] = array
        if "verdict" in head:
            self._verdict = head["verdict"]
        record.update(
            step=int(head["step"]),
            time=float(head.get("time", math.nan)),
            scalars=dict(head.get("scalars", {})),
            arrays=dict(self._current),
            verdict=self._verdict,
        )
        record.update(head.get("extra", {}))
        return record


# ---------------------------------------------------------------------------------------------- reading


class RunReader:
    """Reads a run file incrementally: :meth:`poll` returns the records added since the previous call.

    Follows a file that is still being written (a torn last record is retried on the next poll) and notices when
    the writer replaced the file while thinning it (``poll`` then returns ``reset=True`` and every record again).
    The file need not exist yet: ``poll`` returns nothing until it does.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] | None = None
        self.version: int | None = None
        self._file: Any = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._decoder = _StepDecoder()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reopen(self) -> bool:
        """(Re)open the path when it is new or was replaced; True when reading starts over."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        identity = (stat.st_dev, stat.st_ino)
        if self._file is not None and identity == self._identity and stat.st_size >= self._offset:
            return False
        restarted = self._file is not None
        self.close()
        self._file = open(self.path, "rb")  # noqa: SIM115 - kept open between polls, closed in close()
        self._identity = (os.fstat(self._file.fileno()).st_dev, os.fstat(self._file.fileno()).st_ino)
        self._offset = 0
        self.header = None
        self.version = None
        self._decoder = _StepDecoder()
        return restarted

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """``(new_records, reset)``: records since the last poll; ``reset`` when the file was replaced and these
        are all of its records again."""
        reset = self._reopen()
        if self._file is None:
            return [], reset
        self._file.seek(self._offset)
        data = self._file.read()
        position = 0
        if self.version is None:
            if len(data) < PREAMBLE.size:
                if data and not MAGIC.startswith(data[: len(MAGIC)]):
                    raise RunFileError(f"{self.path} is not a gradwidgets run file (it does not start with GWRUN)")
                return [], reset
            magic, version = PREAMBLE.unpack_from(data, 0)
            if magic != MAGIC:
                raise RunFileError(f"{self.path} is not a gradwidgets run file (it does not start with GWRUN)")
            if version > FORMAT_VERSION:
                raise RunFileVersionError(
                    f"{self.path} is run file format version {version}; this gradwidgets reads versions up to "
                    f"{FORMAT_VERSION}. Upgrade gradwidgets (pip install -U gradwidgets) to read it."
                )
            self.version = version
            position = PREAMBLE.size
        records = []
        while len(data) - position >= RECORD.size:
            tag, length, crc = RECORD.unpack_from(data, position)
            end = position + RECORD.size + length
            if tag not in (TAG_HEADER, TAG_STEP) or length > MAX_RECORD_BYTES:
                raise RunFileError(f"{self.path} is damaged at byte {self._offset + position} (unknown record)")
            if end > len(data):
                break  # being written, or torn by a crash: stop before it
            payload = data[position + RECORD.size : end]
            if zlib.crc32(payload) != crc:
                if end < len(data):
                    raise RunFileError(f"{self.path} is damaged at byte {self._offset + position} (checksum)")
                break  # the last record, still being written
            if tag == TAG_HEADER:
                self.header = json.loads(payload)
            else:
                if self.header is None:
                    raise RunFileError(f"{self.path} has a step before its header (byte {self._offset + position})")
                records.append(self._decoder.decode(payload))
            position = end
        self._offset += position
        return records, reset

    @property
    def offset(self) -> int:
        """Bytes read so far: the end of the last whole record."""
        return self._offset


# ---------------------------------------------------------------------------------------------- the run


class Run:
    """A recorded run, in memory: ``names``, ``steps``, per-layer fields, losses and verdicts.

    ``run.grad_norm`` (and every other recorded per-layer field, ``run.field(name)``) is a ``[records, layers]``
    array, oldest first; ``run.steps`` the step of each record; ``run.loss`` the loss at each record;
    ``run.loss_steps``/``run.losses`` every loss logged (also between records); ``run.verdicts`` the verdict at
    each record (``kind``, ``message``, ``fix``, ``ratio``, ``layers``); ``run.stats(i)`` a ``GradientStats`` of
    record ``i`` (for :func:`gradwidgets.diagnose` and the views). Records grow with :meth:`extend` (the viewer
    follows a file that way).
    """

    def __init__(self, header: Mapping[str, Any], path: Path | None = None, version: int = FORMAT_VERSION) -> None:
        self.path = path
        self.version = version
        self.header = dict(header)
        self.names: tuple[str, ...] = tuple(header["names"])
        self.kinds: tuple[str, ...] = tuple(header.get("kinds", ["?"] * len(self.names)))
        self.roles: tuple[str, ...] = tuple(header.get("roles", ["hidden"] * len(self.names)))
        self.blocks = np.asarray(header.get("blocks", range(len(self.names))), dtype=np.int64)
        self.param_count = np.asarray(header.get("param_count", [np.nan] * len(self.names)), dtype=np.float64)
        self.aliases: tuple[str, ...] = tuple(header.get("aliases", [""] * len(self.names)))
        self.meta: dict[str, Any] = dict(header.get("meta", {}))
        self._records: list[dict[str, Any]] = []
        self._cache: dict[str, Any] = {}

    # -------------------------------------------------------------- building

    def extend(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            self._records.extend(dict(r) for r in records)
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self._records

    def __repr__(self) -> str:
        span = f"steps {self.steps[0]}-{self.steps[-1]}" if len(self) else "no steps yet"
        return f"<Run {self.path or ''} {len(self.names)} layers, {len(self)} records, {span}>"

    # -------------------------------------------------------------- columns

    def _column(self, key: str, build: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def steps(self) -> np.ndarray:
        return self._column("steps", lambda: np.array([r["step"] for r in self._records], dtype=np.int64))

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the recorded array fields (``grad_norm``, ``update_ratio``, ...)."""
        names: dict[str, None] = {}
        for record in self._records[-1:] + self._records[:1]:
            names.update(dict.fromkeys(record["arrays"]))
        return tuple(names)

    def field(self, name: str) -> np.ndarray:
        """``[records, ...]`` array of one recorded field (NaN where a record lacks it)."""
        if name not in self.fields:
            raise ValueError(f"field must be one of {list(self.fields)}, got {name!r}")

        def build() -> np.ndarray:
            values = [r["arrays"].get(name) for r in self._records]
            shapes = {v.shape for v in values if v is not None}
            if len(shapes) != 1:
                width = max((v.size for v in values if v is not None), default=0)
                out = np.full((len(values), width), np.nan)
                for i, v in enumerate(values):
                    if v is not None:
                        out[i, : v.size] = v.ravel()
                return out
            shape = shapes.pop()
            dtype = next(v.dtype for v in values if v is not None)
            fill = np.nan if dtype.kind == "f" else 0
            return np.stack([v if v is not None else np.full(shape, fill, dtype) for v in values])

        return self._column(f"field:{name}", build)

    def __getattr__(self, name: str) -> Any:
        # run.grad_norm, run.update_ratio, ...: every recorded array field as an attribute.
        if name.startswith("_") or name in ("header", "names"):
            raise AttributeError(name)
        if name in self.fields:
            return self.field(name)
        raise AttributeError(f"'Run' has no attribute {name!r} (recorded fields: {list(self.fields)})")

    def scalar(self, name: str) -> np.ndarray:
        """One recorded scalar per record (``loss``, ``detail_step``, ...); NaN where missing."""
        values = [r["scalars"].get(name) for r in self._records]
        if any(isinstance(v, str) for v in values):
            return np.asarray(values, dtype=object)
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    @property
    def loss(self) -> np.ndarray:
        return self._column("loss", lambda: self.scalar("loss"))

    @property
    def loss_steps(self) -> np.ndarray:
        return self._column(
            "loss_steps", lambda: np.concatenate([np.zeros(0)] + [r["loss_steps"] for r in self._records])
        )

    @property
    def losses(self) -> np.ndarray:
        return self._column("losses", lambda: np.concatenate([np.zeros(0)] + [r["losses"] for r in self._records]))

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return [dict(r["verdict"] or {}, step=r["step"]) for r in self._records]

    @property
    def skipped(self) -> np.ndarray:
        """Steps a GradScaler skipped (inf/NaN in the scaled gradients)."""
        return np.array([bool(r.get("skipped", False)) for r in self._records], dtype=bool)

    @property
    def times(self) -> np.ndarray:
        return np.array([r.get("time", np.nan) for r in self._records], dtype=np.float64)

    def index_of(self, step: int) -> int:
        """The record at ``step``, or the last one before it (0 if ``step`` precedes them all)."""
        return max(int(np.searchsorted(self.steps, step, side="right")) - 1, 0)

    def stats(self, index: int = -1) -> GradientStats:
        """Record ``index`` as a ``GradientStats`` (fields this file lacks are NaN, unknown ones are dropped)."""
        record = self._records[index]
        n = len(self.names)
        values: dict[str, Any] = {
            "names": self.names,
            "kinds": self.kinds,
            "roles": self.roles,
            "blocks": self.blocks,
            "param_count": self.param_count,
            "aliases": self.aliases,
        }
        known = {f.name for f in dataclasses.fields(GradientStats)}
        for name, value in record["scalars"].items():
            if name in known:
                values[name] = value
        for name, value in record["arrays"].items():
            if name in known:
                values[name] = value.copy()
        values["step"] = int(record["step"])
        if "loss" in values and values["loss"] is None:
            values["loss"] = math.nan
        return make_stats(values, n)

    def to_pandas(self) -> Any:
        """One row per (step, layer): step, layer index and name, kind, role, block, every recorded per-layer
        field, the loss and verdict at that step. Needs pandas (an optional dependency)."""
        try:
            import pandas as pd
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("Run.to_pandas() needs pandas: pip install pandas") from error
        n, records = len(self.names), len(self)
        columns: dict[str, Any] = {
            "step": np.repeat(self.steps, n),
            "layer_index": np.tile(np.arange(n), records),
            "layer": np.tile(np.asarray(self.names, dtype=object), records),
            "kind": np.tile(np.asarray(self.kinds, dtype=object), records),
            "role": np.tile(np.asarray(self.roles, dtype=object), records),
            "block": np.tile(self.blocks, records),
        }
        for name in self.fields:
            values = self.field(name)
            if values.ndim == 2 and values.shape[1] == n:
                columns[name] = values.reshape(-1)
        columns["loss"] = np.repeat(self.loss, n) if records else np.zeros(0)
        columns["verdict"] = np.repeat(np.asarray([v.get("kind") for v in self.verdicts], dtype=object), n)
        return pd.DataFrame(columns)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read a run file (also one still being written: up to its last whole record)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no run file at {path}")
    with RunReader(path) as reader:
        records, _ = reader.poll()
        if reader.header is None:
            raise RunFileError(f"{path} holds no steps yet (the logger writes its header at the first log())")
        run = Run(reader.header, path=path, version=reader.version or FORMAT_VERSION)
        run.extend(records)
    return run


def find_runs(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself if it is a file, else the ``*.gwrun`` files in that folder, oldest first."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
    return [path]


# ---------------------------------------------------------------------------------------------- writing


class _Lock:
    """An exclusive advisory lock on ``<run file>.lock`` holding the writer's PID; the OS drops it if we die."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self, run_path: Path) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise RunFileLockedError(
                f"{run_path} is being written by another process (PID {owner}, lock {self.path}); one writer per "
                "run file: give each run (or each rank that writes) its own path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None


class RunWriter:
    """Appends step records to a run file, one writer per file (a lock refuses a second one).

    ``mode="w"`` starts the file afresh, ``"a"`` continues an existing one (its layers must match; a torn last
    record from a crash is cut off first). ``keep_recent`` bounds the file: see the module docstring.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "w",
        keep_recent: int = DEFAULT_KEEP_RECENT,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (new file) or 'a' (append), got {mode!r}")
        if isinstance(keep_recent, bool) or not isinstance(keep_recent, int) or not 10 <= keep_recent <= 10_000_000:
            raise ValueError(f"keep_recent must be an integer in [10, 10000000], got {keep_recent!r}")
        self.path = Path(path)
        self.mode = mode
        self.keep_recent = keep_recent
        self.meta = dict(meta or {})
        _dumps(self.meta)  # fail now, not at the first step, when meta cannot be stored
        self.records = 0
        self.compactions = 0
        self.header: dict[str, Any] | None = None
        self._encoder = _StepEncoder()
        self._fd: int | None = None
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"folder {self.path.parent} does not exist (for run file {self.path.name})")
        self._lock = _Lock(self.path)
        self._lock.acquire(self.path)
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise

    def _open(self) -> None:
        if self.mode == "a" and self.path.exists() and self.path.stat().st_size > 0:
            reader = RunReader(self.path)
            try:
                records, _ = reader.poll()
            finally:
                reader.close()
            if reader.version != FORMAT_VERSION:
                raise RunFileVersionError(
                    f"{self.path} is format version {reader.version}; appending needs version {FORMAT_VERSION}"
                )
            self.header = reader.header
            self.records = len(records)
            self._fd = os.open(self.path, os.O_WRONLY)
            os.ftruncate(self._fd, reader.offset)  # drop a torn last record
            os.lseek(self._fd, 0, os.SEEK_END)
            for record in records[-1:]:
                self._encoder.encode(record)  # prime "changed since" with the last record
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(self._fd, PREAMBLE.pack(MAGIC, FORMAT_VERSION))

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write_header(self, layout: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
        """The model's layout (``names``, ``kinds``, ``roles``, ``blocks``, ``param_count``); once per file."""
        header = {
            **{k: list(v) for k, v in layout.items()},
            "meta": {**self.meta, **dict(meta or {})},
            "created": time.time(),
            "keep_recent": self.keep_recent,
        }
        if self.header is not None:
            if list(self.header["names"]) != list(header["names"]):
                raise RunFileError(
                    f"{self.path} records layers {self.header['names'][:3]}...; this model has "
                    f"{header['names'][:3]}...: log it to a new file (mode='w')"
                )
            return
        self._write(_frame(TAG_HEADER, _dumps(header)))
        self.header = header

    def append(self, record: Mapping[str, Any]) -> None:
        """One step: ``step``, ``scalars`` (dict), ``arrays`` (dict of numpy arrays), ``verdict`` (dict or None),
        ``loss_steps``/``losses`` (the losses since the previous record), any other JSON-able keys."""
        if self.header is None:
            raise RunFileError("write_header() must come before the first step")
        self._write(_frame(TAG_STEP, self._encoder.encode(record)))
        self.records += 1
        if self.records >= 3 * self.keep_recent:
            self.compact()

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise RunFileError(f"{self.path} is closed")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def compact(self) -> None:
        """Keep the newest ``keep_recent`` records, thin the older ones to ``keep_recent``; replace the file."""
        reader = RunReader(self.path)
        try:
            records, _ = reader.poll()
        finally:
            reader.close()
        kept = thin(records, self.keep_recent)
        temporary = self.path.with_name(f".{self.path.name}.compacting")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            encoder = _StepEncoder()
            chunks = [PREAMBLE.pack(MAGIC, FORMAT_VERSION), _frame(TAG_HEADER, _dumps(self.header))]
            chunks.extend(_frame(TAG_STEP, encoder.encode(r)) for r in kept)
            data = memoryview(b"".join(chunks))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        assert self._fd is not None
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._encoder = encoder
        self.records = len(kept)
        self.compactions += 1

    def flush(self) -> None:
        """Make what was written durable (``fsync``); a process crash loses nothing even without it."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
            self._lock.release()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def thin(records: Sequence[dict[str, Any]], keep_recent: int) -> list[dict[str, Any]]:
    """The newest ``keep_recent`` records as they are, and at most ``keep_recent`` of the older ones, evenly spread
    (always the first); the losses of a dropped record are folded into the next kept one (bin means)."""
    old, recent = list(records[:-keep_recent]), list(records[-keep_recent:])
    if len(old) <= keep_recent:
        return old + recent
    # Evenly spread over the old *steps* (not indices: earlier thinning left the old records sparse).
    steps = np.array([r["step"] for r in old], dtype=np.float64)
    targets = np.linspace(steps[0], steps[-1], keep_recent)
    right = np.clip(np.searchsorted(steps, targets), 1, len(steps) - 1)
    nearer_left = targets - steps[right - 1] <= steps[right] - targets
    keep = np.unique(np.where(nearer_left, right - 1, right))
    out = []
    pending_steps: list[np.ndarray] = []
    pending_losses: list[np.ndarray] = []
    keep_set = set(keep.tolist())
    for index, record in enumerate(old):
        pending_steps.append(record["loss_steps"])
        pending_losses.append(record["losses"])
        if index in keep_set:
            steps, losses = _bin_means(np.concatenate(pending_steps), np.concatenate(pending_losses))
            out.append({**record, "loss_steps": steps, "losses": losses})
            pending_steps, pending_losses = [], []
    if pending_steps and recent:  # losses after the last kept old record go to the first recent one
        first = recent[0]
        steps = np.concatenate([*pending_steps, first["loss_steps"]])
        losses = np.concatenate([*pending_losses, first["losses"]])
        recent[0] = {**first, "loss_steps": steps, "losses": losses}
    return out + recent


def _bin_means(steps: np.ndarray, losses: np.ndarray, limit: int = MAX_MERGED_LOSSES) -> tuple[np.ndarray, np.ndarray]:
    if len(steps) <= limit:
        return steps, losses
    edges = np.linspace(0, len(steps), limit + 1).astype(int)
    with np.errstate(invalid="ignore"):
        mean_steps = np.array([steps[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
        mean_losses = np.array([np.nanmean(losses[a:b]) if np.isfinite(losses[a:b]).any() else np.nan
                                for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return mean_steps, mean_losses


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every whole record of a file (for tools that stream instead of loading a :class:`Run`)."""
    with RunReader(path) as reader:
        records, _ = reader.poll()
        yield from records
