"""Run files: round trip, reading while written, torn and truncated files, one writer, versions, bounded size."""

from __future__ import annotations

import dataclasses
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradwidgets as gw
from gradwidgets.core import runfile
from gradwidgets.core.runfile import (
    FORMAT_VERSION,
    RunFileError,
    RunFileLockedError,
    RunFileVersionError,
    RunReader,
    RunWriter,
    split_stats,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 2))


def train(model: nn.Module, logger: gw.GradientLogger, steps: int, seed: int = 1) -> list[gw.GradientStats]:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    logged = []
    for _ in range(steps):
        x, y = torch.randn(8, 5, generator=generator), torch.randn(8, 2, generator=generator)
        optimizer.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        stats = logger.log(loss)
        if stats is not None:
            logged.append(stats)
        optimizer.step()
    return logged


def assert_same_stats(recorded: gw.GradientStats, read: gw.GradientStats) -> None:
    for field in dataclasses.fields(gw.GradientStats):
        a, b = getattr(recorded, field.name), getattr(read, field.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=field.name)  # bit for bit, NaN where NaN
        elif isinstance(a, float) and np.isnan(a):
            assert np.isnan(b), field.name
        else:
            assert a == b, field.name


# ---------------------------------------------------------------------------------------------- round trip


def test_round_trip_gives_the_probes_numbers_bit_for_bit(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "run.gwrun"
    with gw.GradientLogger(model, path, every=1, detail_every=3) as logger:
        logged = train(model, logger, 12)
    run = gw.load_run(path)
    assert len(run) == 12 and run.steps.tolist() == list(range(1, 13))
    assert run.names == ("0", "2", "3", "4") == logged[0].names
    for index, stats in enumerate(logged):
        assert_same_stats(stats, run.stats(index))
    # Independent of the probe: plain torch on the final gradients (still in .grad after the last step).
    final = [float(torch.linalg.vector_norm(torch.cat([p.grad.ravel() for p in m.parameters(recurse=False)])))
             for m in (model[0], model[2], model[3], model[4])]
    np.testing.assert_allclose(run.grad_norm[-1], final, rtol=1e-6)
    # Losses: every step's, the same float32 values the loop computed.
    assert run.loss_steps.tolist() == list(range(1, 13))
    np.testing.assert_array_equal(run.losses, [s.loss for s in logged])
    assert [v["kind"] for v in run.verdicts] == [gw.diagnose(s).kind for s in logged]
    assert run.meta["every"] == 1 and run.meta["world_size"] == 1


def test_to_pandas_has_one_row_per_step_and_layer(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    model = tiny_model()
    with gw.GradientLogger(model, tmp_path / "r.gwrun", every=2) as logger:
        train(model, logger, 9)
    run = gw.load_run(tmp_path / "r.gwrun")
    frame = run.to_pandas()
    assert run.steps.tolist() == [1, 2, 4, 6, 8, 9]  # close() records the last step's gradients, still there
    assert len(frame) == 6 * 4
    row = frame[(frame.step == 6) & (frame.layer == "3")].iloc[0]
    assert row.grad_norm == run.grad_norm[3, 2] and row.role == "norm" and row.kind == "LayerNorm"
    assert row.loss == run.loss[3] and row.verdict == run.verdicts[3]["kind"]


def test_every_array_field_of_the_stats_is_recorded_even_new_ones(tmp_path: Path) -> None:
    # A field the probe may gain later (issue 9 adds some): the file stores it without being told.
    extended = dataclasses.make_dataclass(
        "ExtendedStats", [("curvature", object, dataclasses.field(default=None))], bases=(gw.GradientStats,),
        frozen=True,
    )
    model = tiny_model()
    probe = gw.GradientProbe(model)
    model(torch.randn(4, 5)).sum().backward()
    base = probe.read()
    stats = extended(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                     curvature=np.arange(4.0) / 3)
    layout, scalars, arrays = split_stats(stats)
    assert "curvature" in arrays and "names" in layout and "loss" in scalars
    with RunWriter(tmp_path / "x.gwrun") as writer:
        writer.write_header(layout)
        writer.append(runfile.RunRecord(step=1, scalars=scalars, arrays=arrays))
    run = gw.load_run(tmp_path / "x.gwrun")
    np.testing.assert_array_equal(run.curvature[0], np.arange(4.0) / 3)
    np.testing.assert_array_equal(run.stats(0).grad_norm, base.grad_norm)  # unknown fields are dropped there


def test_unchanged_arrays_are_not_written_again(tmp_path: Path) -> None:
    model = tiny_model()
    with gw.GradientLogger(model, tmp_path / "a.gwrun", every=1, detail_every=20) as logger:
        train(model, logger, 40)
    per_record = os.path.getsize(tmp_path / "a.gwrun") / 40
    # grad_norm (4 x 8 bytes) every record, the six other arrays only when they change (detail every 20); an
    # 18-byte frame (sync marker and two checksums) per record; the verdict's text (~230 bytes: it names the
    # compared layers as the bars number them, "layer 1 (0) vs layer 2 (2)") is most of the rest.
    assert per_record < 660
    run = gw.load_run(tmp_path / "a.gwrun")
    np.testing.assert_array_equal(run.weight_norm[1], run.weight_norm[18])  # carried forward between details
    assert not np.array_equal(run.weight_norm[18], run.weight_norm[19])  # measured again at read 20


# ---------------------------------------------------------------------------------------------- live and damaged


def test_a_run_is_read_while_another_process_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "live.gwrun"
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        sys.path.insert(0, {str(ROOT)!r})
        import gradwidgets as gw
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        logger = gw.GradientLogger(model, {str(path)!r}, every=1)
        for step in range(40):
            model.zero_grad(); loss = model(torch.randn(2, 3)).pow(2).mean(); loss.backward()
            logger.log(loss); time.sleep(0.02)
        logger.close()
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script])
    try:
        reader = RunReader(path)
        counts, seen = [], []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records, reset = reader.poll()
            assert not reset
            seen.extend(records)
            counts.append(len(seen))
            if writer.poll() is not None and not records:
                break
            time.sleep(0.01)
        reader.close()
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == 0
    assert [r.step for r in seen] == list(range(1, 41))  # every record once, in order, none torn
    partial = [c for c in counts if 0 < c < 40]
    assert len(set(partial)) >= 5, "the reader should have seen the run grow, record by record"
    full = gw.load_run(path)
    np.testing.assert_array_equal(np.stack([r.grad_norm for r in seen]), full.grad_norm)


def record_ends(data: bytes) -> list[int]:
    """Byte offsets where each record of a version-2 file ends (independent of the reader: the frame format)."""
    ends = []
    position = struct.calcsize("<6sH")
    while position < len(data):
        sync, _, length, _, _ = struct.unpack_from("<4s2sIII", data, position)
        assert sync == b"\xa7GW\x1e"
        position += 18 + length
        ends.append(position)
    return ends


def _write_run(path: Path, steps: int = 10) -> gw.GradientStats:
    model = tiny_model()
    with gw.GradientLogger(model, path, every=1) as logger:
        return train(model, logger, steps)[-1]


def test_a_record_half_written_is_not_read_until_it_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "whole.gwrun"
    _write_run(path, 5)
    data = path.read_bytes()
    reader = RunReader(path)
    head = data[: len(data) - 100]
    path.write_bytes(head)
    records, _ = reader.poll()
    assert len(records) == 4  # the fifth is torn: skipped for now
    with open(path, "ab") as f:  # the writer finishes its write()
        f.write(data[len(data) - 100 :])
    records, reset = reader.poll()
    assert not reset and [r.step for r in records] == [5]
    reader.close()


def test_a_truncated_file_loads_up_to_its_last_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "crash.gwrun"
    _write_run(path, 10)
    data = path.read_bytes()
    whole = gw.load_run(path)
    ends = record_ends(data)[:-1]  # the last one is the end mark
    for cut in sorted({ends[1] + 1, ends[5] - 1, ends[5], ends[-1] - 7, ends[-1] - 1, *range(ends[3], ends[4], 97)}):
        path.write_bytes(data[:cut])
        run = gw.load_run(path)
        complete = sum(1 for end in ends[1:] if end <= cut)  # ends[0] is the header
        assert len(run) == complete, cut
        np.testing.assert_array_equal(run.grad_norm, whole.grad_norm[:complete])
    path.write_bytes(data[: ends[0] - 3])
    with pytest.raises(RunFileError, match="no steps yet"):
        gw.load_run(path)


def test_resuming_a_crashed_file_cuts_the_torn_record_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "resume.gwrun"
    _write_run(path, 6)
    data = path.read_bytes()
    path.write_bytes(data[: record_ends(data)[-2] - 20])  # killed inside the last record's write()
    model = tiny_model()
    with gw.GradientLogger(model, path, every=1, mode="a") as logger:
        for step in range(100, 103):
            model.zero_grad()
            model(torch.randn(3, 5)).sum().backward()
            logger.log(step=step)
    run = gw.load_run(path)
    assert run.steps.tolist() == [1, 2, 3, 4, 5, 100, 101, 102]


def test_damage_before_the_last_record_is_an_error_not_silence(tmp_path: Path) -> None:
    path = tmp_path / "bad.gwrun"
    _write_run(path, 6)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match="damaged at byte"):
        gw.load_run(path)


def test_a_newer_format_version_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "future.gwrun"
    _write_run(path, 2)
    data = path.read_bytes()
    path.write_bytes(struct.pack("<6sH", b"GWRUN\x00", FORMAT_VERSION + 1) + data[8:])
    with pytest.raises(RunFileVersionError, match=rf"version {FORMAT_VERSION + 1}.*up to {FORMAT_VERSION}.*Upgrade"):
        gw.load_run(path)
    with pytest.raises(RunFileVersionError):
        gw.GradientLogger(tiny_model(), path, mode="a")


def test_a_file_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.gwrun"
    path.write_text("step,loss\n1,0.5\n")
    with pytest.raises(RunFileError, match="not a gradwidgets run file"):
        gw.load_run(path)


# ---------------------------------------------------------------------------------------------- one writer


def test_a_second_writer_is_refused_and_the_first_keeps_writing(tmp_path: Path) -> None:
    path = tmp_path / "one.gwrun"
    model = tiny_model()
    first = gw.GradientLogger(model, path, every=1)
    train(model, first, 2)
    with pytest.raises(RunFileLockedError, match=rf"PID {os.getpid()}.*one writer per run file"):
        gw.GradientLogger(tiny_model(), path)
    other = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import gradwidgets as gw, torch;"
         f"gw.GradientLogger(torch.nn.Linear(2, 2), {str(path)!r})"],
        capture_output=True, text=True, timeout=120,
    )
    assert other.returncode != 0 and "RunFileLockedError" in other.stderr and "being written" in other.stderr
    train(model, first, 2)
    first.close()
    assert len(gw.load_run(path)) == 4  # the refused writers did not truncate it
    gw.GradientLogger(tiny_model(), path, mode="a").close()  # free again once closed


def test_a_killed_writer_does_not_lock_the_file_forever(tmp_path: Path) -> None:
    path = tmp_path / "killed.gwrun"
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import gradwidgets as gw, torch;"
              f"l = gw.GradientLogger(torch.nn.Linear(2, 2), {str(path)!r}); print('ready', flush=True);"
              "time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        with pytest.raises(RunFileLockedError, match=f"PID {writer.pid}"):
            RunWriter(path, mode="a")
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    RunWriter(path, mode="a").close()  # the OS dropped the dead writer's lock


# ---------------------------------------------------------------------------------------------- bounded size


def test_long_runs_are_thinned_to_a_bound_with_recent_steps_at_full_resolution(tmp_path: Path) -> None:
    path = tmp_path / "long.gwrun"
    keep = 10
    reader = RunReader(path)
    followed: list[runfile.RunRecord] = []
    resets = 0
    with RunWriter(path, keep_recent=keep) as writer:
        writer.write_header({"names": ["a", "b"]})
        for step in range(1, 201):
            writer.append(runfile.RunRecord(
                step=step, scalars={"loss": float(step)}, arrays={"grad_norm": np.array([step, -step], float)},
                verdict=gw.Diagnosis("healthy", "", "", 1.0), loss_steps=np.array([step]), losses=np.array([step]),
            ))
            assert writer.records <= 3 * keep
            if step % 7 == 0:
                records, reset = reader.poll()
                if reset:
                    resets += 1
                    followed = []
                followed.extend(records)
        records, reset = reader.poll()
        followed = records if reset else followed + records
    reader.close()
    assert writer.compactions >= 1 and resets >= 1
    run = gw.load_run(path)
    steps = run.steps.tolist()
    assert 2 * keep <= len(run) <= 3 * keep
    assert steps[0] == 1 and steps[-keep:] == list(range(201 - keep, 201))  # the newest at full resolution
    assert steps == sorted(set(steps))
    np.testing.assert_array_equal(run.grad_norm[:, 0], run.steps)  # each kept record kept its own numbers
    assert [r.step for r in followed] == steps  # a follower that was reset ends with the same records
    # Losses of dropped records were folded into the kept ones (bin means): the curve still spans the whole run,
    # in order, and each point is the mean of the losses it stands for (here loss == step).
    assert run.loss_steps[0] == 1 and run.loss_steps[-1] == 200 and np.all(np.diff(run.loss_steps) > 0)
    assert len(run.losses) <= len(run) * runfile.MAX_MERGED_LOSSES
    np.testing.assert_allclose(run.losses, run.loss_steps, rtol=1e-12)
    assert not list(tmp_path.glob(".*compacting"))


def test_bad_arguments_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be"):
        RunWriter(tmp_path / "m.gwrun", mode="r")
    with pytest.raises(ValueError, match="keep_recent must be"):
        RunWriter(tmp_path / "m.gwrun", keep_recent=3)
    with pytest.raises(ValueError, match="every must be"):
        gw.GradientLogger(tiny_model(), tmp_path / "m.gwrun", every=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gw.GradientLogger(tiny_model(), tmp_path / "missing" / "m.gwrun")
    with pytest.raises(FileNotFoundError):
        gw.load_run(tmp_path / "nothing.gwrun")
