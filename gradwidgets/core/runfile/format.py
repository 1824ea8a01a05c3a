"""The bytes of a run file: preamble, record frames, and the checked codec of the header and step payloads.

Everything read here may be damaged or forged: every malformed input raises :class:`RunFileError` naming the
byte offset (never a raw ``ValueError``/``KeyError``/``UnicodeDecodeError``), and what is decoded is checked
against the header (names bounded in number, every per-layer array exactly one value per layer, the payload
used up exactly).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import zlib
from typing import Any

import numpy as np

from ..diagnosis import Diagnosis
from ..signals import InstabilityReading
from ..stats import GradientStats
from .record import LAYOUT_FIELDS, RunRecord

__all__ = [
    "FORMAT_VERSION",
    "LAYOUT_FIELDS",
    "MAGIC",
    "RunFileError",
    "RunFileLockedError",
    "RunFileVersionError",
    "NotARunFileError",
]

FORMAT_VERSION = 2
"""1: ``tag | length | crc | payload``. 2: every record starts with :data:`SYNC` and its frame carries a checksum
of itself (a damaged length is seen as damage, and records after damage can be found again); a closed file ends
with an end record."""
MAGIC = b"GWRUN\x00"
PREAMBLE = struct.Struct("<6sH")
FRAME_V1 = struct.Struct("<2sII")
FRAME = struct.Struct("<4s2sIII")
"""sync | tag | payload length | crc32 of the payload | crc32 of the 14 bytes before it."""
SYNC = b"\xa7GW\x1e"
JSON_LENGTH = struct.Struct("<I")
TAG_HEADER = b"RH"
TAG_STEP = b"RS"
TAG_LOSSES = b"RL"
"""Losses logged after the last step record (written by ``close()``)."""
TAG_END = b"RE"
"""The writer closed the file: nothing after it is being written."""
TAGS = (TAG_HEADER, TAG_STEP, TAG_LOSSES, TAG_END)
SUFFIX = ".gwrun"
MAX_RECORD_BYTES = 1 << 28
MAX_LAYERS = 100_000
MAX_NAME_CHARS = 1_000
MAX_READINGS = 10_000
"""Instability readings one step record may carry (those measured since the previous record)."""
DTYPES = ("<f8", "|b1", "<i8")
_ARRAY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ARRAY_FIELDS = frozenset(f.name for f in dataclasses.fields(GradientStats) if str(f.type).startswith("np.ndarray"))
_PER_LAYER = _ARRAY_FIELDS - {"blocks", "param_count", "time_grad_norm"}
_NOT_ARRAYS = frozenset(f.name for f in dataclasses.fields(GradientStats)) - _PER_LAYER - {"time_grad_norm"}
"""Layout and scalar fields: an array of that name would overwrite them."""


class RunFileError(ValueError):
    """The file is not a run file, or is damaged (the message names the byte offset)."""


class NotARunFileError(RunFileError):
    """The file does not start with the run-file magic: not a run file at all (no point reading it again)."""


class RunFileVersionError(RunFileError):
    """The file was written by a newer gradwidgets (a newer format version) than this one."""


class RunFileLockedError(RuntimeError):
    """Another live process is writing this run file."""


# ---------------------------------------------------------------------------------------------- frames


def frame(tag: bytes, payload: bytes) -> bytes:
    """One version-2 record."""
    head = SYNC + tag + struct.pack("<II", len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def frame_size(version: int) -> int:
    return FRAME.size if version >= 2 else FRAME_V1.size


def parse_frame(data: bytes | memoryview, position: int, version: int) -> tuple[bytes, int, int] | None:
    """``(tag, length, payload crc)`` of the frame at ``position``, or None when its own bytes are damaged."""
    if version >= 2:
        sync, tag, length, crc, head_crc = FRAME.unpack_from(data, position)
        if sync != SYNC or zlib.crc32(bytes(data[position : position + FRAME.size - 4])) != head_crc:
            return None
    else:
        tag, length, crc = FRAME_V1.unpack_from(data, position)
    if tag not in TAGS or length > MAX_RECORD_BYTES:
        return None
    return tag, length, crc


def dumps(obj: Any) -> bytes:
    # NaN/inf are legal here (Python's json writes and reads them); the file is read by this module.
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a run file")


def _loads(text: bytes | memoryview) -> Any:
    # A forged [[[[...]]]] raises RecursionError inside the parser: the reader turns it into a RunFileError.
    return json.loads(bytes(text).decode("utf-8"))


# ---------------------------------------------------------------------------------------------- header


def _strings(header: dict[str, Any], key: str, n: int, default: str) -> list[str]:
    values = header.get(key) or [default] * n  # absent or empty (stats made without aliases): the default
    if not isinstance(values, list) or len(values) != n:
        raise ValueError(f"header field {key!r} must be a list of {n} strings")
    if not all(isinstance(v, str) and len(v) <= MAX_NAME_CHARS for v in values):
        raise ValueError(f"header field {key!r} must hold strings of at most {MAX_NAME_CHARS} characters")
    return values


def decode_header(payload: bytes | memoryview) -> dict[str, Any]:
    """The header, checked: ``names`` 1..MAX_LAYERS strings, the other layout lists as long."""
    header = _loads(payload)
    if not isinstance(header, dict):
        raise ValueError("the header must be a JSON object")
    names = header.get("names")
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_LAYERS:
        raise ValueError(f"header field 'names' must be a list of 1 to {MAX_LAYERS} layer names")
    n = len(names)
    header["names"] = _strings(header, "names", n, "")
    header["kinds"] = _strings(header, "kinds", n, "?")
    header["roles"] = _strings(header, "roles", n, "hidden")
    header["aliases"] = _strings(header, "aliases", n, "")
    blocks = header.get("blocks", list(range(n)))
    if not isinstance(blocks, list) or len(blocks) != n or not all(_is_int(b) for b in blocks):
        raise ValueError(f"header field 'blocks' must be a list of {n} integers")
    counts = header.get("param_count", [math.nan] * n)
    if not isinstance(counts, list) or len(counts) != n or not all(_is_number(c) for c in counts):
        raise ValueError(f"header field 'param_count' must be a list of {n} numbers")
    if not isinstance(header.get("meta", {}), dict):
        raise ValueError("header field 'meta' must be a JSON object")
    return header


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------- steps


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _stored(name: str, value: Any) -> np.ndarray:
    array = np.ascontiguousarray(value)
    kind = array.dtype.kind
    if kind == "f":
        return array.astype("<f8", copy=False)
    if kind == "b":
        return array.astype("|b1", copy=False)
    if kind in "iu":
        return array.astype("<i8", copy=False)
    raise ValueError(f"array field {name!r} has unsupported dtype {array.dtype}")


class StepEncoder:
    """Turns step records into payloads, writing each array only when it changed, the verdict when it changed."""

    def __init__(self) -> None:
        self._previous: dict[str, np.ndarray] = {}
        self._verdict: dict[str, Any] | None = None

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
        """What :meth:`restore` needs when the payload just encoded never reached the file."""
        return dict(self._previous), self._verdict

    def restore(self, state: tuple[dict[str, np.ndarray], dict[str, Any] | None]) -> None:
        self._previous, self._verdict = dict(state[0]), state[1]

    def encode(self, record: RunRecord) -> bytes:
        specs = []
        chunks = []
        for name, value in record.arrays.items():
            array = _stored(name, value)
            if _same(array, self._previous.get(name)):
                continue
            self._previous[name] = array
            specs.append([name, array.dtype.str, list(array.shape)])
            chunks.append(array.tobytes())
        for name, value in (("loss_steps", record.loss_steps), ("losses", record.losses)):
            # Float steps: a thinned record's loss points are bin means (of steps too).
            array = np.ascontiguousarray(value, dtype="<f8").reshape(-1)
            specs.append([name, array.dtype.str, list(array.shape)])
            chunks.append(array.tobytes())
        head: dict[str, Any] = {"step": int(record.step), "time": float(record.time), "scalars": record.scalars,
                                "arrays": specs}
        verdict = record.verdict.to_dict() if record.verdict is not None else None
        if verdict != self._verdict:
            head["verdict"] = verdict
            self._verdict = verdict
        if record.extra:
            head["extra"] = record.extra
        if record.signals:  # an optional key: readers before it ignore it
            head["signals"] = [reading.to_dict() for reading in record.signals]
        text = dumps(head)
        return JSON_LENGTH.pack(len(text)) + text + b"".join(chunks)


def encode_losses(loss_steps: np.ndarray, losses: np.ndarray) -> bytes:
    """An ``RL`` payload: the losses logged after the last step record."""
    steps = np.ascontiguousarray(loss_steps, dtype="<f8").reshape(-1)
    values = np.ascontiguousarray(losses, dtype="<f8").reshape(-1)
    return struct.pack("<I", len(steps)) + steps.tobytes() + values.tobytes()


def decode_losses(payload: bytes | memoryview) -> tuple[np.ndarray, np.ndarray]:
    (count,) = struct.unpack_from("<I", payload, 0)
    if len(payload) != 4 + 16 * count:
        raise ValueError(f"a losses record of {count} points must be {4 + 16 * count} bytes, got {len(payload)}")
    steps = np.frombuffer(payload, "<f8", count, 4).astype(np.float64)
    return steps, np.frombuffer(payload, "<f8", count, 4 + 8 * count).astype(np.float64)


class StepDecoder:
    """The inverse, checked against the header: payloads to records (arrays carried from earlier records)."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self._current: dict[str, np.ndarray] = {}
        self._verdict: Diagnosis | None = None

    def forget(self) -> None:
        """After a gap (salvaged damage): what earlier records carried may have changed in the records lost."""
        self._current = {}
        self._verdict = None

    def decode(self, payload: bytes | memoryview) -> RunRecord:
        (size,) = JSON_LENGTH.unpack_from(payload, 0)
        if JSON_LENGTH.size + size > len(payload):
            raise ValueError("the step's JSON runs past its record")
        head = _loads(payload[JSON_LENGTH.size : JSON_LENGTH.size + size])
        if not isinstance(head, dict) or not _is_int(head.get("step")) or not isinstance(head.get("arrays"), list):
            raise ValueError("a step must be a JSON object with an integer 'step' and a list 'arrays'")
        scalars = head.get("scalars", {})
        extra = head.get("extra", {})
        if not isinstance(scalars, dict) or not isinstance(extra, dict):
            raise ValueError("a step's 'scalars' and 'extra' must be JSON objects")
        signals = head.get("signals", [])
        if not isinstance(signals, list) or len(signals) > MAX_READINGS:
            raise ValueError(f"a step's 'signals' must be a list of at most {MAX_READINGS} readings")
        readings = tuple(InstabilityReading.from_dict(reading) for reading in signals)
        moment = head.get("time", math.nan)
        if not _is_number(moment):
            raise ValueError("a step's 'time' must be a number")
        offset = JSON_LENGTH.size + size
        arrays: dict[str, np.ndarray] = {}
        for spec in head["arrays"]:
            array, offset = self._array(spec, payload, offset, arrays)
            arrays[spec[0]] = array
        if offset != len(payload):
            raise ValueError(f"{len(payload) - offset} bytes after the step's last array")
        loss_steps, losses = arrays.pop("loss_steps", np.zeros(0)), arrays.pop("losses", np.zeros(0))
        if loss_steps.shape != losses.shape:
            raise ValueError("a step's 'loss_steps' and 'losses' must be as long")
        self._current.update(arrays)
        if "verdict" in head:
            self._verdict = None if head["verdict"] is None else Diagnosis.from_dict(head["verdict"])
        return RunRecord(
            step=head["step"], arrays=dict(self._current), scalars=scalars, verdict=self._verdict,
            loss_steps=loss_steps, losses=losses, time=float(moment), extra=extra, signals=readings,
        )

    def _array(
        self, spec: Any, payload: bytes | memoryview, offset: int, seen: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, int]:
        if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str) and spec[1] in DTYPES):
            raise ValueError(f"an array spec must be [name, one of {list(DTYPES)}, shape], got {spec!r:.80}")
        name, dtype, shape = spec
        if not _ARRAY_NAME.fullmatch(name) or name in seen or name in _NOT_ARRAYS:
            raise ValueError(f"array name {name!r:.80} is not a field name or comes twice")
        if not isinstance(shape, list) or len(shape) > 2 or not all(_is_int(d) and d >= 0 for d in shape):
            raise ValueError(f"array {name!r} has a bad shape {shape!r:.80}")
        if name in _PER_LAYER and shape != [self.n_layers]:
            raise ValueError(f"array {name!r} must hold one value per layer ({self.n_layers}), got shape {shape}")
        count = int(np.prod(shape)) if shape else 1
        nbytes = count * np.dtype(dtype).itemsize
        if offset + nbytes > len(payload):
            raise ValueError(f"array {name!r} runs past its record")
        array = np.frombuffer(payload, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
        return array.astype(array.dtype.newbyteorder("=")), offset + nbytes
