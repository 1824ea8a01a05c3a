"""``RunReader``: reads a run file incrementally, also while it is written, and recovers what damage left intact.

A record the reader sees half written (its frame is there, its payload not yet) is read again at the next poll;
in a *finished* file (it ends with an end record) that is damage instead. Damage raises :class:`RunFileError`
naming the byte offset, unless ``salvage=True``: then the reader looks for the next record that checks out
(every version-2 record starts with a sync marker and carries checksums of its frame and payload) and goes on from
there, noting the offset in :attr:`RunReader.damage`. After such a gap the arrays a record did not repeat, and the
verdict, are unknown (NaN, None) until a record carries them again: the records lost may have changed them.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .format import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE,
    SYNC,
    TAG_END,
    TAG_HEADER,
    TAG_LOSSES,
    NotARunFileError,
    RunFileError,
    RunFileVersionError,
    StepDecoder,
    decode_header,
    decode_losses,
    frame_size,
    parse_frame,
)
from .record import RunRecord

__all__ = ["END_PAYLOAD", "RunReader"]

END_PAYLOAD = struct.Struct("<QQ")
"""The end record's payload: records written, records dropped."""


class RunReader:
    """Reads a run file incrementally: :meth:`poll` returns the records added since the previous call.

    Follows a file that is still being written (a torn last record is retried on the next poll) and notices when
    the writer replaced the file while thinning it, or when it was cut short (``poll`` then returns
    ``reset=True`` and every record again). The file need not exist yet: ``poll`` returns nothing until it does.
    Only the first 8 bytes of a file are read before its magic is checked. :attr:`finished`: the writer closed
    the file. ``salvage``: go on after damage (see the module docstring) instead of raising.
    """

    def __init__(self, path: str | os.PathLike[str], salvage: bool = False) -> None:
        self.path = Path(path)
        self.salvage = bool(salvage)
        self.header: dict[str, Any] | None = None
        self.version: int | None = None
        self.finished = False
        self.damage: list[int] = []
        self.end_at: int | None = None
        """Where the end record starts (when the file ends with one): an appending writer cuts it off."""
        self._file: Any = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._decoder = StepDecoder(0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reopen(self) -> bool:
        """(Re)open the path when it is new, was replaced or was cut short; True when reading starts over."""
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
        fstat = os.fstat(self._file.fileno())
        self._identity = (fstat.st_dev, fstat.st_ino)
        self._offset = 0
        self.header = None
        self.version = None
        self.finished = False
        self.damage = []
        self.end_at = None
        self._decoder = StepDecoder(0)
        return restarted

    def _preamble(self) -> bool:
        """Check the magic and version (8 bytes read); False while the file is shorter than that."""
        self._file.seek(0)
        data = self._file.read(PREAMBLE.size)
        if len(data) < PREAMBLE.size:
            if data and not MAGIC.startswith(data[: len(MAGIC)]):
                raise NotARunFileError(f"{self.path} is not a gradwidgets run file (it does not start with GWRUN)")
            return False
        magic, version = PREAMBLE.unpack(data)
        if magic != MAGIC:
            raise NotARunFileError(f"{self.path} is not a gradwidgets run file (it does not start with GWRUN)")
        if version > FORMAT_VERSION:
            raise RunFileVersionError(
                f"{self.path} is run file format version {version}; this gradwidgets reads versions up to "
                f"{FORMAT_VERSION}. Upgrade gradwidgets (pip install -U gradwidgets) to read it."
            )
        if version < 1:
            raise RunFileError(f"{self.path} is damaged at byte 6 (format version {version})")
        self.version = version
        self._offset = PREAMBLE.size
        return True

    def poll(self) -> tuple[list[RunRecord], bool]:
        """``(new_records, reset)``: records since the last poll; ``reset`` when the file was replaced or cut and
        these are all of its records again."""
        reset = self._reopen()
        if self._file is None:
            return [], reset
        if self.version is None and not self._preamble():
            return [], reset
        self._file.seek(self._offset)
        data = self._file.read()
        records: list[RunRecord] = []
        position = self._scan(data, records)
        self._offset += position
        return records, reset

    def _scan(self, data: bytes, records: list[RunRecord]) -> int:
        assert self.version is not None
        size = frame_size(self.version)
        position = 0
        while len(data) - position >= size:
            where = self._offset + position
            parsed = parse_frame(data, position, self.version)
            if parsed is None:
                resume = self._damaged(data, position, where, "a record's frame does not check out")
                if resume is None:
                    return position
                position = resume
                continue
            tag, length, crc = parsed
            end = position + size + length
            if end > len(data):
                if not self._ends_finished(data):
                    break  # being written, or torn by a crash: stop before it, read it again later
                resume = self._damaged(data, position, where, "a record runs past the end of a finished file")
                if resume is None:
                    return position
                position = resume
                continue
            payload = memoryview(data)[position + size : end]
            if zlib.crc32(payload) != crc:
                if end == len(data) and not self._ends_finished(data):
                    break  # the last record, still being written
                resume = self._damaged(data, position, where, "checksum")
                if resume is None:
                    return position
                position = resume
                continue
            try:
                self._take(tag, payload, records)
                self.end_at = where if tag == TAG_END else None
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, struct.error) as error:
                resume = self._damaged(data, position, where, str(error) or type(error).__name__)
                if resume is None:
                    return position
                position = resume
                continue
            position = end
        return position

    def _take(self, tag: bytes, payload: memoryview, records: list[RunRecord]) -> None:
        if tag == TAG_HEADER:
            if self.header is not None:
                raise ValueError("a second header")
            self.header = decode_header(payload)
            self._decoder = StepDecoder(len(self.header["names"]))
        elif self.header is None:
            raise ValueError("a record before the header")
        elif tag == TAG_END:
            END_PAYLOAD.unpack(payload)
        elif tag == TAG_LOSSES:
            steps, losses = decode_losses(payload)
            step = int(steps[-1]) if len(steps) and np.isfinite(steps[-1]) else 0
            records.append(RunRecord(step=step, loss_steps=steps, losses=losses, losses_only=True))
        else:
            records.append(self._decoder.decode(payload))
        self.finished = tag == TAG_END  # a record after an end mark: appended again (mode="a"), not finished

    def _ends_finished(self, data: bytes) -> bool:
        """True when the bytes end with a whole end record: nothing is being written, all of it is final."""
        if self.version is None or self.version < 2:
            return False
        size = frame_size(self.version) + END_PAYLOAD.size
        if len(data) < size:
            return False
        parsed = parse_frame(data, len(data) - size, self.version)
        tail = data[len(data) - END_PAYLOAD.size :]
        return parsed is not None and parsed[0] == TAG_END and zlib.crc32(tail) == parsed[2]

    def _damaged(self, data: bytes, position: int, where: int, reason: str) -> int | None:
        """Raise, or (salvaging) the position of the next record that checks out; None to stop at the damage for
        now (nothing intact after it yet: looked for again at the next poll)."""
        if not self.salvage or self.version is None or self.version < 2:
            hint = "; load_run(path, salvage=True) recovers the intact records after it" if self.version != 1 else ""
            raise RunFileError(f"{self.path} is damaged at byte {where} ({reason}){hint}")
        if where not in self.damage:
            self.damage.append(where)
        self._decoder.forget()
        start = position + 1
        while True:
            found = data.find(SYNC, start)
            if found < 0 or len(data) - found < frame_size(self.version):
                return None
            parsed = parse_frame(data, found, self.version)
            if parsed is not None:
                return found
            start = found + 1

    @property
    def offset(self) -> int:
        """Bytes read so far: the end of the last whole record."""
        return self._offset
