"""What the live widgets cost: training speed with the UI attached, traffic to the front end, monitor overhead.

    python benchmarks/bench_widgets.py [--seconds 3] [--rounds 5]

* **speed**: a depth-20 ``Playground`` playing (frames rendered into a recording comm that JSON-encodes every
  message as a kernel would) against a bare ``TrainingSession`` stepping in a loop, same config, in the same
  process; runs interleaved, median ratio. Bare is measured on the main thread with torch's default thread
  count (what a user's own loop gets) and with one thread; the ratio uses the faster of the two.
* **traffic**: messages and bytes per second the Playground sends while playing: payload (JSON + binary
  buffers) and on the wire with the Jupyter message envelope (``jupyter_client.Session.serialize``).
* **monitor**: a user's loop with ``GradientMonitor.update(loss)`` after each ``backward()`` against the same
  loop without it; interleaved, median time ratio.
* **threads**: a bare session stepped in a background thread with torch's default threads vs one thread:
  why :class:`gradwidgets.runtime.Runner` sets one thread for its trainer.

Numbers vary with machine load; the script prints what it measured, targets next to them.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from torch import nn

import gradwidgets as gw
from gradwidgets.testing import recording_comm

CONFIG = dict(activation="sigmoid", depth=20, width=64)
SAMPLE_PARENT = {
    "msg_id": "2b9c7d3a-5c7a4e0f9d8e4b3a_1234_56",
    "session": "2b9c7d3a-5c7a4e0f9d8e4b3a",
    "username": "username",
    "date": "2025-01-01T00:00:00.000000Z",
    "msg_type": "execute_request",
    "version": "5.3",
}


def bare_rate(session: gw.TrainingSession, seconds: float) -> float:
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.step()
        steps += 1
    return steps / (time.perf_counter() - start)


def playground_rate(pg, seconds: float) -> float:
    before, start = pg.session.steps, time.perf_counter()
    pg.play()
    time.sleep(seconds)
    pg.pause()
    elapsed = time.perf_counter() - start
    steps = pg.session.steps - before
    if pg.session.steps < before:  # history restarted (should not happen here)
        steps = pg.session.steps
    return steps / elapsed


def wire_bytes(messages) -> int:
    """Bytes on the ZMQ socket: the signed Jupyter envelope around each comm message, plus its buffers."""
    from jupyter_client.session import Session

    session = Session(key=b"benchmark-key")
    total = 0
    for m in messages:
        msg = session.msg("comm_msg", content={"comm_id": m.comm_id, "data": m.data}, parent=SAMPLE_PARENT)
        total += sum(len(frame) for frame in session.serialize(msg)) + sum(m.buffer_sizes)
    return total


def bench_playground(seconds: float, rounds: int) -> dict:
    with recording_comm() as recorder:
        pg = gw.Playground(**CONFIG)
        bare_default = gw.TrainingSession(**CONFIG)
        bare_one = gw.TrainingSession(**CONFIG)
        default_threads = torch.get_num_threads()
        ui, bare, ratios, traffic, frame_rates = [], [], [], [], []
        for _ in range(rounds):
            pg.reset()
            time.sleep(0.2)
            since, frames_before = time.monotonic(), pg.runner.frames_rendered
            rate = playground_rate(pg, seconds)
            window = time.monotonic() - since
            frame_rates.append((pg.runner.frames_rendered - frames_before) / window)
            sent = recorder.updates(since=since)
            traffic.append((len(sent) / window, sum(m.payload_bytes for m in sent) / window, wire_bytes(sent) / window))
            torch.set_num_threads(default_threads)
            rate_default = bare_rate(bare_default, seconds)
            torch.set_num_threads(1)
            rate_one = bare_rate(bare_one, seconds)
            torch.set_num_threads(default_threads)
            best = max(rate_default, rate_one)
            ui.append(rate)
            bare.append((rate_default, rate_one))
            ratios.append(rate / best)
        pg.close()
    return {
        "ui": statistics.median(ui),
        "bare_default": statistics.median(b[0] for b in bare),
        "bare_one": statistics.median(b[1] for b in bare),
        "ratio": statistics.median(ratios),
        "messages": statistics.median(t[0] for t in traffic),
        "payload": statistics.median(t[1] for t in traffic),
        "wire": statistics.median(t[2] for t in traffic),
        "frames": statistics.median(frame_rates),
        "default_threads": default_threads,
    }


def user_loop(model: nn.Module, batch, steps: int, monitor=None) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model(batch).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if monitor is not None:
            monitor.update(loss)
        optimizer.step()
    return time.perf_counter() - start


def bench_monitor(name: str, model: nn.Module, batch, seconds: float, rounds: int) -> dict:
    user_loop(model, batch, 5)
    probe_start = time.perf_counter()
    user_loop(model, batch, 20)
    steps = max(20, int(seconds / ((time.perf_counter() - probe_start) / 20)))
    ratios, reads = [], []
    with recording_comm() as recorder:
        for _ in range(rounds):
            plain = user_loop(model, batch, steps)
            monitor = gw.GradientMonitor(model)
            since = time.monotonic()
            watched = user_loop(model, batch, steps, monitor)
            ratios.append(watched / plain)
            reads.append((monitor.reads / watched, len(recorder.updates(since=since)) / watched))
            monitor.close()
    return {
        "name": name,
        "steps": steps,
        "ratio": statistics.median(ratios),
        "reads": statistics.median(r[0] for r in reads),
        "messages": statistics.median(r[1] for r in reads),
    }


def thread_rates(seconds: float) -> dict:
    out = {}
    for label, threads in (("default", None), ("one", 1)):
        result = {}

        def work(threads=threads, result=result):
            if threads:
                torch.set_num_threads(threads)
            session = gw.TrainingSession(**CONFIG)
            session.step(10)
            result["rate"] = bare_rate(session, seconds)
            result["threads"] = torch.get_num_threads()

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        out[label] = result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads; config {CONFIG}\n")
    threads = thread_rates(args.seconds)
    pg = bench_playground(args.seconds, args.rounds)
    # The user's loop runs with one torch thread: with the default two on this loaded 2-core machine a step's
    # time swings by 10x from run to run, which would drown the monitor's cost in noise.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    mlp = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(64, 64), nn.ReLU())], nn.Linear(64, 1))
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), num_layers=4)
    monitors = [
        bench_monitor("MLP 8x64, batch 128", mlp, torch.randn(128, 64), args.seconds, args.rounds),
        bench_monitor("TransformerEncoder 4x64, 16x32 tokens", encoder, torch.randn(16, 32, 64), args.seconds,
                      args.rounds),
    ]  # fmt: skip

    rows = [
        ("bare session, main thread, torch default threads", f"{pg['bare_default']:.0f} steps/s", ""),
        ("bare session, main thread, 1 torch thread", f"{pg['bare_one']:.0f} steps/s", ""),
        ("Playground playing (UI attached, depth 20)", f"{pg['ui']:.0f} steps/s", ""),
        ("speed ratio UI / best bare (median of rounds)", f"{pg['ratio']:.2f}", ">= 0.90"),
        ("frames drawn (default fps)", f"{pg['frames']:.0f} /s", "<= 10 /s"),
        ("messages to the front end (one per mark per frame)", f"{pg['messages']:.0f} /s", ""),
        ("bytes to the front end (payload)", f"{pg['payload'] / 1000:.1f} kB/s", "<= 50 kB/s"),
        ("bytes to the front end (with Jupyter envelope)", f"{pg['wire'] / 1000:.1f} kB/s", "<= 20 kB/s"),
    ]
    for m in monitors:
        rows.append((f"monitor overhead: {m['name']}", f"{m['ratio']:.3f}x", "<= 1.05x"))
        rows.append(
            (f"  frames / messages ({m['steps']} steps a run)", f"{m['reads']:.1f} / {m['messages']:.0f} per s", "")
        )
    rows += [
        ("bare session in a thread, torch default threads", f"{threads['default']['rate']:.0f} steps/s", ""),
        ("bare session in a thread, 1 torch thread", f"{threads['one']['rate']:.0f} steps/s", "runner's choice"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)} | {'measured':>16} | target")
    print(f"{'-' * width}-|-{'-' * 16}-|-------")
    for name, value, target in rows:
        print(f"{name.ljust(width)} | {value:>16} | {target}")


if __name__ == "__main__":
    main()
