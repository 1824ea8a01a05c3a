"""DDP and FSDP2 on 2 gloo processes (``python -m torch.distributed.run``): rank 0 writes, numbers equal one process.

The reference is plain torch in this process: the same model and seed, the whole global batch at once, one SGD
step after another; per-layer gradient norms straight from ``p.grad``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gradwidgets as gw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _dist_worker as worker  # noqa: E402

pytestmark = pytest.mark.slow


def single_process() -> dict[str, np.ndarray]:
    """Per step and layer: gradient norm; at the first step also max |g| and the weight norm."""
    model = worker.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    xs, ys = worker.data()
    out: dict[str, list] = {"grad_norm": [], "grad_max_abs": [], "weight_norm": []}
    for step in range(worker.STEPS):
        optimizer.zero_grad()
        (model(xs[step]) - ys[step]).pow(2).mean().backward()
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        grads = [torch.cat([p.grad.ravel() for p in m.parameters()]) for m in linears]
        out["grad_norm"].append([float(torch.linalg.vector_norm(g)) for g in grads])
        if step == 0:
            out["grad_max_abs"] = [float(g.abs().max()) for g in grads]
            weights = [torch.cat([p.detach().ravel() for p in m.parameters()]) for m in linears]
            out["weight_norm"] = [float(torch.linalg.vector_norm(w)) for w in weights]
        optimizer.step()
    return {k: np.asarray(v) for k, v in out.items()}


def launch(wrap: str, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(HERE / "_dist_worker.py"), "--wrap", wrap, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize("wrap", ["ddp", "fsdp2"])
def test_two_gloo_ranks_record_the_single_process_numbers(wrap: str, tmp_path: Path) -> None:
    out = tmp_path / f"{wrap}.gwrun"
    launch(wrap, out)
    run = gw.load_run(out)
    assert run.names == ("0", "2", "4")  # no "module." from DDP
    assert run.meta["world_size"] == 2 and run.meta["sharded"] == (wrap == "fsdp2")
    assert run.steps.tolist() == list(range(1, worker.STEPS + 1))
    reference = single_process()
    np.testing.assert_allclose(run.grad_norm, reference["grad_norm"], rtol=1e-5)
    # The detail fields, measured at the first read: sums and maxima over shards also match.
    np.testing.assert_allclose(run.grad_max_abs[0], reference["grad_max_abs"], rtol=1e-5)
    np.testing.assert_allclose(run.weight_norm[0], reference["weight_norm"], rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # one file, written once, lock released
