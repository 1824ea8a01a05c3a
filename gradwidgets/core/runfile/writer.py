"""``RunWriter``: appends records to a run file, one writer per file; and the thinning that bounds its size.

A failed write (a full disk, a quota) is cut off again at once (``ftruncate`` back to the end of the last whole
record, which needs no space), so the file stays readable with every record before the failure, and records
written after it follow on directly. The error is raised to the caller (:class:`~gradwidgets.GradientLogger`
logs it once, counts the record as dropped and never lets it reach the training loop).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...validation import check_limit
from .format import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE,
    TAG_END,
    TAG_HEADER,
    TAG_LOSSES,
    TAG_STEP,
    RunFileError,
    RunFileVersionError,
    StepEncoder,
    decode_header,
    dumps,
    encode_losses,
    frame,
)
from .lock import RunLock
from .reader import END_PAYLOAD, RunReader
from .record import RunRecord

__all__ = ["DEFAULT_KEEP_RECENT", "MAX_MERGED_LOSSES", "RunWriter", "thin"]

logger = logging.getLogger(__name__)

DEFAULT_KEEP_RECENT = 5000
MAX_MERGED_LOSSES = 64
"""A thinned record carries at most this many loss points (bin means) for the steps it stands in for."""


class RunWriter:
    """Appends step records to a run file, one writer per file (a lock refuses a second one).

    ``mode="w"`` starts the file afresh, ``"a"`` continues an existing one (its layers must match; a torn last
    record from a crash, and the end record of a closed file, are cut off first; :attr:`last_step` is the
    newest step it holds). ``keep_recent`` bounds the file: see :func:`thin`. :meth:`close` marks the file
    finished (an end record).
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
        keep_recent = check_limit("keep_recent", keep_recent)
        self.path = Path(path)
        self.mode = mode
        self.keep_recent = keep_recent
        self.meta = dict(meta or {})
        dumps(self.meta)  # fail now, not at the first step, when meta cannot be stored
        self.records = 0
        self.dropped = 0
        """Records the caller could not write (I/O errors): stored in the end record."""
        self.last_step = 0
        self.compactions = 0
        self.header: dict[str, Any] | None = None
        self._encoder = StepEncoder()
        self._fd: int | None = None
        self._end = 0
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"folder {self.path.parent} does not exist (for run file {self.path.name})")
        self._lock = RunLock(self.path)
        self._lock.acquire(self.path)
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise

    def _open(self) -> None:
        if self.mode == "a" and self.path.exists() and self.path.stat().st_size > 0:
            with RunReader(self.path) as reader:
                records, _ = reader.poll()
            if reader.version != FORMAT_VERSION:
                raise RunFileVersionError(
                    f"{self.path} is format version {reader.version}; appending needs version {FORMAT_VERSION}: "
                    "log to a new file (mode='w')"
                )
            self.header = reader.header
            steps = [r.step for r in records] + [float(s) for r in records for s in r.loss_steps if np.isfinite(s)]
            self.last_step = int(max(steps, default=0))
            self.records = sum(not r.losses_only for r in records)
            self.dropped = max((r.dropped for r in records), default=0)
            self._fd = os.open(self.path, os.O_WRONLY)
            self._end = reader.end_at if reader.end_at is not None else reader.offset
            os.ftruncate(self._fd, self._end)  # drop a torn last record, and the end mark: the run goes on
            for record in [r for r in records if not r.losses_only][-1:]:
                self._encoder.encode(record)  # prime "changed since" with the last record
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._end = 0
            self._write(PREAMBLE.pack(MAGIC, FORMAT_VERSION))

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write_header(self, layout: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
        """The model's layout (``names``, ``kinds``, ``roles``, ``blocks``, ``param_count``); once per file."""
        header: dict[str, Any] = {
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
        payload = dumps(header)
        try:
            decode_header(payload)  # what a reader would refuse is refused here, before the first step
        except ValueError as error:
            raise ValueError(f"cannot write this header to {self.path}: {error}") from None
        self._write(frame(TAG_HEADER, payload))
        self.header = header

    def append(self, record: RunRecord) -> None:
        """One step record. On an I/O error nothing of it stays in the file (and the error is raised)."""
        if self.header is None:
            raise RunFileError("write_header() must come before the first step")
        state = self._encoder.state()
        try:
            self._write(frame(TAG_STEP, self._encoder.encode(record)))
        except BaseException:
            self._encoder.restore(state)  # the arrays it thinks written were not
            raise
        self.records += 1
        self.last_step = max(self.last_step, int(record.step))
        if self.records >= 3 * self.keep_recent:
            self.compact()

    def append_losses(self, loss_steps: np.ndarray, losses: np.ndarray) -> None:
        """Losses logged after the last step record (no gradients to go with them)."""
        if self.header is None or not len(loss_steps):
            return
        self._write(frame(TAG_LOSSES, encode_losses(loss_steps, losses)))

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise RunFileError(f"{self.path} is closed")
        view = memoryview(data)
        offset = self._end
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError:
            try:
                os.ftruncate(self._fd, self._end)  # no torn record stays behind: later ones follow on directly
            except OSError:
                logger.exception("could not cut a failed write off %s", self.path)
            raise
        self._end = offset

    def compact(self) -> None:
        """Keep the newest ``keep_recent`` records, thin the older ones to ``keep_recent``; replace the file."""
        with RunReader(self.path) as reader:
            records, _ = reader.poll()
        kept = thin(records, self.keep_recent)
        temporary = self.path.with_name(f".{self.path.name}.compacting")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            encoder = StepEncoder()
            chunks = [PREAMBLE.pack(MAGIC, FORMAT_VERSION), frame(TAG_HEADER, dumps(self.header))]
            for r in kept:
                if r.losses_only:
                    chunks.append(frame(TAG_LOSSES, encode_losses(r.loss_steps, r.losses)))
                else:
                    chunks.append(frame(TAG_STEP, encoder.encode(r)))
            data = memoryview(b"".join(chunks))
            size = len(data)
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        os.replace(temporary, self.path)
        assert self._fd is not None
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY)
        self._end = size
        self._encoder = encoder
        self.records = sum(not r.losses_only for r in kept)
        self.compactions += 1

    def flush(self) -> None:
        """Make what was written durable (``fsync``); a process crash loses nothing even without it."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Mark the file finished (an end record), make it durable, release the lock."""
        if self._fd is None:
            return
        try:
            if self.header is not None:
                self._write(frame(TAG_END, END_PAYLOAD.pack(self.records, self.dropped)))
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
            self._lock.release()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def thin(records: Sequence[RunRecord], keep_recent: int) -> list[RunRecord]:
    """The newest ``keep_recent`` records as they are, and at most ``keep_recent`` of the older ones, evenly spread
    (always the first); the losses of a dropped record are folded into the next kept one (bin means)."""
    records = _fold_loss_records(records)
    old, recent = list(records[:-keep_recent]), list(records[-keep_recent:])
    if len(old) <= keep_recent:
        return old + recent
    # Evenly spread over the old *steps* (not indices: earlier thinning left the old records sparse).
    steps = np.array([r.step for r in old], dtype=np.float64)
    targets = np.linspace(steps[0], steps[-1], keep_recent)
    right = np.clip(np.searchsorted(steps, targets), 1, len(steps) - 1)
    nearer_left = targets - steps[right - 1] <= steps[right] - targets
    keep_set = set(np.unique(np.where(nearer_left, right - 1, right)).tolist())
    out = []
    pending_steps: list[np.ndarray] = []
    pending_losses: list[np.ndarray] = []
    for index, record in enumerate(old):
        pending_steps.append(record.loss_steps)
        pending_losses.append(record.losses)
        if index in keep_set:
            merged_steps, merged_losses = _bin_means(np.concatenate(pending_steps), np.concatenate(pending_losses))
            out.append(replace(record, loss_steps=merged_steps, losses=merged_losses))
            pending_steps, pending_losses = [], []
    if pending_steps and recent:  # losses after the last kept old record go to the first recent one
        first = recent[0]
        recent[0] = replace(
            first,
            loss_steps=np.concatenate([*pending_steps, first.loss_steps]),
            losses=np.concatenate([*pending_losses, first.losses]),
        )
    return out + recent


def _fold_loss_records(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Losses-only records (a resumed run's earlier tail) folded into the next step record; a last one stays."""
    out: list[RunRecord] = []
    carried: list[RunRecord] = []
    for record in records:
        if record.losses_only:
            carried.append(record)
            continue
        if carried:
            record = replace(
                record,
                loss_steps=np.concatenate([*(c.loss_steps for c in carried), record.loss_steps]),
                losses=np.concatenate([*(c.losses for c in carried), record.losses]),
            )
            carried = []
        out.append(record)
    return out + carried


def _bin_means(steps: np.ndarray, losses: np.ndarray, limit: int = MAX_MERGED_LOSSES) -> tuple[np.ndarray, np.ndarray]:
    if len(steps) <= limit:
        return steps, losses
    edges = np.linspace(0, len(steps), limit + 1).astype(int)
    with np.errstate(invalid="ignore"):
        mean_steps = np.array([steps[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
        mean_losses = np.array([np.nanmean(losses[a:b]) if np.isfinite(losses[a:b]).any() else np.nan
                                for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return mean_steps, mean_losses
