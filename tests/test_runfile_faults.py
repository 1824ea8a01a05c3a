"""Run files under faults (issue 20): full disks, damage, forgeries, resumes, the last steps, loss meaning, the
viewer's sources. Each case is checked against what the file must hold, computed independently of the reader."""

from __future__ import annotations

import errno
import os
import random
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradwidgets as gw
from gradwidgets.core import runfile
from gradwidgets.core.runfile import NotARunFileError, RunFileError, RunReader, RunRecord, RunWriter, split_stats
from gradwidgets.core.runfile import format as codec


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))


def step(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    model.zero_grad()
    x, y = torch.randn(8, 5, generator=generator), torch.randn(8, 2, generator=generator)
    loss = (model(x) - y).pow(2).mean()
    loss.backward()
    return loss


def write_run(path: Path, steps: int = 30, every: int = 1) -> list[float]:
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    losses = []
    with gw.GradientLogger(model, path, every=every) as logger:
        for _ in range(steps):
            loss = step(model, generator)
            losses.append(float(loss))
            logger.log(loss)
    return losses


def record_starts(data: bytes) -> list[int]:
    """Where each record starts (the frame format, read independently of the reader)."""
    starts, position = [], 8
    while position < len(data):
        starts.append(position)
        position += 18 + struct.unpack_from("<I", data, position + 6)[0]
    return starts


# ---------------------------------------------------------------------------------------------- 1: a full disk


@pytest.fixture(params=["tmpfs", "simulated"])
def small_disk(tmp_path: Path, request: pytest.FixtureRequest):
    """A 256 kB tmpfs when this process may mount one (root in a container that allows it); else, and for the
    "simulated" case, None: the test then makes the writer's ``pwrite`` fail half-way with ENOSPC."""
    if request.param == "simulated":
        yield None
        return
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=20)


def test_a_full_disk_never_reaches_the_loop_and_the_file_keeps_every_record_written(
    small_disk: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = small_disk or tmp_path
    path = folder / "full.gwrun"
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    failing = {"on": False}
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> int:  # a writer error: half the bytes land, then ENOSPC
        if failing["on"]:
            real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    if small_disk is None:
        monkeypatch.setattr(os, "pwrite", pwrite)
    filler = folder / "filler"
    with gw.GradientLogger(model, path, every=1) as logger:
        for number in range(1, 41):
            if number == 11:  # the disk fills up for a while
                if small_disk is not None:
                    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
                    try:
                        while True:
                            os.write(fd, b"\0" * 512)
                    except OSError as error:
                        assert error.errno == errno.ENOSPC
                    finally:
                        os.close(fd)
                failing["on"] = True
            if number == 21:
                filler.unlink(missing_ok=True)
                failing["on"] = False
            logger.log(step(model, generator))  # never raises
        dropped = logger.dropped
    # A real full disk may still take a small record into the slack of the file's last page: most are dropped.
    assert 5 <= dropped <= 10 if small_disk is not None else dropped == 10
    assert sum("could not write" in r.message for r in caplog.records) == 1, "logged once"
    run = gw.load_run(path)
    steps = run.steps.tolist()
    assert steps[:10] == list(range(1, 11)) and steps[-20:] == list(range(21, 41)) and len(steps) == 40 - dropped
    assert run.dropped == dropped and run.finished
    with gw.GradientLogger(model, path, every=1, mode="a") as logger:  # and it can be resumed
        logger.log(step(model, generator))
    assert gw.load_run(path).steps.tolist()[-2:] == [40, 41]


# ---------------------------------------------------------------------------------------------- 2: damage


def test_damage_in_a_finished_file_names_its_offset_and_salvage_recovers_every_intact_record(tmp_path: Path) -> None:
    path = tmp_path / "damaged.gwrun"
    write_run(path, 30)
    data = bytearray(path.read_bytes())
    starts = record_starts(bytes(data))
    target = starts[10]  # step 10's record (record 0 is the header)
    data[target + 7] ^= 0x40  # its length field: once read as "still being written", losing 21 records
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=f"damaged at byte {target} .*salvage=True"):
        gw.load_run(path)
    run = gw.load_run(path, salvage=True)
    assert run.steps.tolist() == [s for s in range(1, 31) if s != 10]
    assert run.damage == [target] and run.finished
    # A record that runs past the end of a finished file is damage too (a length enlarged to just fit the frame).
    data = bytearray(path.read_bytes())
    data[target + 7] ^= 0x40
    length = struct.unpack_from("<I", data, target + 6)[0]
    forged = codec.frame(b"RS", bytes(data[target + 18 : target + 18 + length]) + b"\0" * (len(data)))[:18]
    data[target : target + 18] = forged
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=f"damaged at byte {target}"):
        gw.load_run(path)


def test_a_torn_tail_of_an_unfinished_file_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "torn.gwrun"
    write_run(path, 8)
    data = path.read_bytes()
    starts = record_starts(data)
    path.write_bytes(data[: starts[-2] + 30])  # killed inside step 8's write(), before close
    run = gw.load_run(path)
    assert run.steps.tolist() == list(range(1, 8)) and not run.finished


# ---------------------------------------------------------------------------------------------- 3: forgeries


def forged_file(path: Path, *records: tuple[bytes, bytes], header: dict | None = None) -> None:
    header = header if header is not None else {"names": ["a", "b"]}
    chunks = [codec.PREAMBLE.pack(codec.MAGIC, codec.FORMAT_VERSION), codec.frame(b"RH", codec.dumps(header))]
    chunks += [codec.frame(tag, payload) for tag, payload in records]
    path.write_bytes(b"".join(chunks))


def step_payload(head: dict, arrays: bytes = b"") -> bytes:
    text = codec.dumps(head)
    return struct.pack("<I", len(text)) + text + arrays


def raw_step(text: bytes) -> bytes:
    return struct.pack("<I", len(text)) + text


GOOD = {"step": 1, "scalars": {}, "arrays": [["grad_norm", "<f8", [2]]]}
TWO = np.array([1.0, 2.0]).tobytes()

FORGERIES = {
    "not utf-8": [(b"RS", struct.pack("<I", 2) + b"\xff\xfe")],
    "deep nesting": [(b"RS", raw_step(b'{"step":1,"arrays":[],"x":' + b"[" * 5000 + b"]" * 5000 + b"}"))],
    "json runs past": [(b"RS", struct.pack("<I", 1000) + b"{}")],
    "not an object": [(b"RS", step_payload([1, 2]))],
    "step not int": [(b"RS", step_payload({**GOOD, "step": "1"}, TWO))],
    "shape [1]": [(b"RS", step_payload({**GOOD, "arrays": [["grad_norm", "<f8", [1]]]}, TWO[:8]))],
    "bytes left": [(b"RS", step_payload(GOOD, TWO + b"\0" * 8))],
    "array too short": [(b"RS", step_payload(GOOD, TWO[:8]))],
    "dunder name": [(b"RS", step_payload({**GOOD, "arrays": [["__class__", "<f8", [2]]]}, TWO))],
    "scalar as array": [(b"RS", step_payload({**GOOD, "arrays": [["loss", "<f8", [2]]]}, TWO))],
    "bad dtype": [(b"RS", step_payload({**GOOD, "arrays": [["grad_norm", "|O", [2]]]}, TWO))],
    "bad verdict": [(b"RS", step_payload({**GOOD, "verdict": {"kind": "__class__"}}, TWO))],
    "second header": [(b"RS", step_payload(GOOD, TWO)), (b"RH", codec.dumps({"names": ["x", "y"]}))],
    "losses mismatch": [(b"RL", struct.pack("<I", 3) + b"\0" * 16)],
    "end too short": [(b"RE", b"\0" * 3)],
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_records_that_pass_the_checksum_are_run_file_errors_with_the_offset(tmp_path: Path, name: str) -> None:
    path = tmp_path / "forged.gwrun"
    forged_file(path, *FORGERIES[name])
    with pytest.raises(RunFileError, match=r"damaged at byte \d+"):
        gw.load_run(path)


@pytest.mark.parametrize(
    "header",
    [{"names": [f"l{i}" for i in range(2_000_000)]}, {"names": []}, {"names": "ab"}, {"names": ["a"], "kinds": [1]},
     {"names": ["a"], "blocks": ["x"]}, {"names": ["a"], "meta": []}, ["a"]],
)
def test_headers_are_checked(tmp_path: Path, header: object) -> None:
    path = tmp_path / "header.gwrun"
    forged_file(path, header=header)  # type: ignore[arg-type]
    with pytest.raises(RunFileError, match="damaged at byte 8"):
        gw.load_run(path)


def test_mutation_fuzz_gives_runs_or_run_file_errors_and_salvage_keeps_every_intact_record(tmp_path: Path) -> None:
    original = tmp_path / "original.gwrun"
    write_run(original, 30)
    data = original.read_bytes()
    starts = record_starts(data)
    whole = list(range(1, 31))
    rng = random.Random(20)
    path = tmp_path / "mutant.gwrun"
    deadline = time.monotonic() + 60
    mutants = 0
    while mutants < 300 and time.monotonic() < deadline:
        mutant = bytearray(data)
        how = rng.choice(["flip", "byte", "cut", "insert", "delete", "length"])
        at = rng.randrange(starts[1], len(data))  # after the header: that one has no copy to fall back on
        if how == "flip":
            mutant[at] ^= 1 << rng.randrange(8)
        elif how == "byte":
            mutant[at] = rng.randrange(256)
        elif how == "cut":
            del mutant[at:]
        elif how == "insert":
            mutant[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif how == "delete":
            del mutant[at : at + rng.randrange(1, 40)]
        else:
            record = rng.choice(starts[1:])
            struct.pack_into("<I", mutant, record + 6, rng.randrange(1 << 32))
        path.write_bytes(bytes(mutant))
        started = time.monotonic()
        try:
            gw.load_run(path)
        except RunFileError as error:
            assert "byte" in str(error) or "no steps" in str(error), (how, str(error))
        run = gw.load_run(path, salvage=True)  # never raises for damage after the header
        assert time.monotonic() - started < 2, how
        steps = run.steps.tolist()
        assert steps == sorted(set(steps)) and set(steps) <= set(whole), how
        if how in ("flip", "byte", "length") and mutant[-34:] == data[-34:]:
            # One damaged record (or none): every other one is recovered.
            assert len(steps) >= 29, (how, at, steps)
        mutants += 1
    assert mutants >= 100


# ---------------------------------------------------------------------------------------------- 4 and 5


def test_append_mode_continues_the_step_numbering(tmp_path: Path) -> None:
    path = tmp_path / "resume.gwrun"
    write_run(path, 10, every=1)
    model = tiny_model()
    generator = torch.Generator().manual_seed(2)
    with gw.GradientLogger(model, path, every=5, mode="a") as logger:
        for _ in range(10):
            logger.log(step(model, generator))
    run = gw.load_run(path)
    assert run.steps.tolist() == list(range(1, 11)) + [15, 20]
    assert run.loss_steps.tolist() == list(range(1, 21))
    assert run.index_of(15) == 10


def test_close_writes_the_pending_losses_and_the_last_steps_gradients(tmp_path: Path) -> None:
    path = tmp_path / "short.gwrun"
    losses = write_run(path, 5, every=10)
    run = gw.load_run(path)
    assert run.steps.tolist() == [1, 5] and run.finished
    assert run.loss_steps.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(run.losses, losses, rtol=1e-6)
    # Gradients gone (zeroed to None after the last step): the losses still come, without a gradient record.
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    with gw.GradientLogger(model, tmp_path / "zeroed.gwrun", every=10) as logger:
        for _ in range(5):
            logger.log(step(model, generator))
        model.zero_grad(set_to_none=True)
    run = gw.load_run(tmp_path / "zeroed.gwrun")
    assert run.steps.tolist() == [1] and run.loss_steps.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(run.losses, losses, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- 6: loss meaning


def test_an_accumulated_steps_loss_is_the_sum_of_its_micro_batch_losses(tmp_path: Path) -> None:
    model = tiny_model()
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.randn(4, 5, generator=generator), torch.randn(4, 2, generator=generator)) for _ in range(8)]
    with gw.GradientLogger(model, tmp_path / "acc.gwrun", every=1) as logger:
        for start in (0, 4):  # no optimizer: the weights stay, so the losses can be recomputed below
            model.zero_grad()
            parts = []
            for x, y in batches[start : start + 4]:
                loss = (model(x) - y).pow(2).mean() / 4
                loss.backward()
                parts.append(loss)
            if start == 0:
                logger.log(loss, loss_scale=4)  # the README's loop: the (divided) loss times the accumulation
            else:
                logger.log(parts)  # every micro-batch's divided loss: their sum is the step's loss
    run = gw.load_run(tmp_path / "acc.gwrun")
    reference = tiny_model()
    with torch.no_grad():  # plain torch: the last micro-batch's loss, and the loss over step 2's 16 samples
        last = float((reference(batches[3][0]) - batches[3][1]).pow(2).mean())
        x, y = torch.cat([b[0] for b in batches[4:]]), torch.cat([b[1] for b in batches[4:]])
        whole = float((reference(x) - y).pow(2).mean())
    np.testing.assert_allclose(run.losses, [last, whole], rtol=1e-6)
    with pytest.raises(ValueError, match="loss_scale must be"):
        with gw.GradientLogger(tiny_model(), tmp_path / "x.gwrun") as bad:
            bad.log(1.0, loss_scale=0)


# ---------------------------------------------------------------------------------------------- 8: the viewer's side


def test_the_magic_is_checked_before_reading_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    with open(path, "wb") as handle:
        handle.write(b"NOTARUN!")
        handle.truncate(1 << 30)  # 1 GiB, sparse
    started = time.monotonic()
    with pytest.raises(NotARunFileError, match="not a gradwidgets run file"):
        gw.load_run(path)
    assert time.monotonic() - started < 0.5


def test_the_viewers_source_refuses_a_non_run_file_once_and_resets_on_truncation(tmp_path: Path) -> None:
    from gradwidgets.apps.run_viewer import RunSource

    other = tmp_path / "other.gwrun"
    other.write_bytes(b"hello world, not a run")
    source = RunSource(other)
    assert source.poll() and source.failed and "not a gradwidgets run file" in source.error
    polls = []
    source.reader.poll = lambda: polls.append(1)  # type: ignore[method-assign]
    assert not source.poll() and not polls  # refused once, not polled again
    path = tmp_path / "live.gwrun"
    write_run(path, 5)
    source = RunSource(path)
    assert source.poll() and len(source.run) == 5 and source.reader.finished
    os.truncate(path, 0)
    assert source.poll() and source.run is None and source.restarted  # cut to nothing: start over
    source.close()


def test_a_viewer_whose_file_is_cut_to_nothing_shows_it_waiting_again(tmp_path: Path) -> None:
    path = tmp_path / "cut.gwrun"
    write_run(path, 5)
    viewer = gw.RunViewer(path, interval=60)
    try:
        assert viewer.shown_steps == [5] and "5 records" in viewer.status.value
        os.truncate(path, 0)
        viewer._refresh()
        assert viewer.shown_steps == [None] and "waiting for the first record" in viewer.status.value
        assert "5 records" not in viewer.status.value
    finally:
        viewer.close()


def test_records_round_trip_through_the_typed_record(tmp_path: Path) -> None:
    model = tiny_model()
    model(torch.randn(3, 5)).sum().backward()
    stats = gw.GradientProbe(model).read(loss=0.5)
    verdict = gw.diagnose(stats)
    path = tmp_path / "typed.gwrun"
    with RunWriter(path) as writer:
        writer.write_header(split_stats(stats)[0])
        writer.append(RunRecord.from_stats(stats, verdict, [1], [0.5], extra={"note": "x"}))
    with RunReader(path) as reader:
        (record,), _ = reader.poll()
    assert record.verdict == verdict and record.extra == {"note": "x"} and record.step == stats.step
    np.testing.assert_array_equal(record.grad_norm, stats.grad_norm)
    assert runfile.lock_owner(path) is None and not runfile.writer_alive(path)


def test_version_1_files_are_still_read(tmp_path: Path) -> None:
    # Version 1 framing (tag | length | crc | payload, no sync marker, no end record), written out by hand.
    import json
    import zlib

    header = json.dumps({"names": ["a", "b"], "meta": {"old": True}}).encode()
    head = json.dumps({"step": 3, "scalars": {"loss": 0.5}, "arrays": [["grad_norm", "<f8", [2]]],
                       "verdict": {"kind": "healthy", "message": "", "fix": "", "ratio": 1.0}}).encode()
    step_payload_v1 = struct.pack("<I", len(head)) + head + np.array([1.5, 2.5]).tobytes()
    chunks = [struct.pack("<6sH", b"GWRUN\0", 1)]
    for tag, payload in ((b"RH", header), (b"RS", step_payload_v1)):
        chunks.append(struct.pack("<2sII", tag, len(payload), zlib.crc32(payload)) + payload)
    path = tmp_path / "v1.gwrun"
    path.write_bytes(b"".join(chunks))
    run = gw.load_run(path)
    assert run.version == 1 and run.steps.tolist() == [3] and run.meta == {"old": True}
    np.testing.assert_array_equal(run.grad_norm, [[1.5, 2.5]])
    assert run.verdicts[0]["kind"] == "healthy" and not run.finished
    with pytest.raises(gw.core.RunFileVersionError, match="appending needs version 2"):
        RunWriter(path, mode="a")


def test_a_header_the_reader_would_refuse_is_refused_by_the_writer(tmp_path: Path) -> None:
    stats = gw.core.stats.make_stats({"names": ("a", "b"), "kinds": ("Linear",) * 2, "roles": ("hidden",) * 2,
                                      "blocks": np.arange(2), "param_count": np.ones(2), "step": 1}, 2)
    path = tmp_path / "made.gwrun"
    with RunWriter(path) as writer:  # made stats carry no aliases: stored as the default
        writer.write_header(split_stats(stats)[0])
        writer.append(RunRecord.from_stats(stats))
    assert gw.load_run(path).aliases == ("", "")
    with RunWriter(tmp_path / "bad.gwrun") as writer:
        with pytest.raises(ValueError, match="header field 'kinds'"):
            writer.write_header({"names": ["a", "b"], "kinds": ["x"]})


def test_the_viewer_recovers_the_records_after_damage_and_says_where(tmp_path: Path) -> None:
    from gradwidgets.apps.run_viewer import RunSource

    path = tmp_path / "watched.gwrun"
    write_run(path, 12)
    data = bytearray(path.read_bytes())
    target = record_starts(bytes(data))[4]  # step 4's record
    data[target + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    source = RunSource(path)
    assert source.poll() and not source.error
    assert source.run.steps.tolist() == [s for s in range(1, 13) if s != 4]
    assert source.reader.damage == [target] and source.reader.finished
    source.close()
