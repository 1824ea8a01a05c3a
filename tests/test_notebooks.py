"""Every notebook runs top to bottom in a real Jupyter kernel (nbclient), and says what it claims.

Each tutorial prints the numbers it measures; the tests below parse those printed numbers from the executed
outputs and pin them to the teaching claims (shared/teaching-claims.md), so a change in the library that breaks
a lesson fails here. Executed copies and per-notebook times go to ``artifacts/`` for people to look at.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import nbformat
import pytest
from _servers import ARTIFACTS, NOTEBOOKS
from nbclient import NotebookClient

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

TUTORIALS = sorted(p.name for p in NOTEBOOKS.glob("0*.ipynb"))
ALL_NOTEBOOKS = [*TUTORIALS, "dashboard.ipynb"]
TIME_LIMIT_S = 60.0
"""Each notebook must run in under a minute on a 2-core CPU (issue 5)."""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|inf)"
_executed: dict[str, tuple[Any, float]] = {}


def execute(name: str) -> tuple[Any, float]:
    """Run a notebook once per session (cached); returns the executed notebook and its wall time."""
    if name not in _executed:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = NotebookClient(
            notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        )
        started = time.monotonic()
        client.execute()
        elapsed = time.monotonic() - started
        out = ARTIFACTS / "notebooks"
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, str(out / name))
        _executed[name] = (notebook, elapsed)
        timings = ARTIFACTS / "timings-notebooks.json"
        recorded = json.loads(timings.read_text()) if timings.exists() else {}
        recorded[name] = round(elapsed, 1)
        timings.write_text(json.dumps(recorded, indent=2, sort_keys=True))
    return _executed[name]


def text_of(notebook: Any) -> str:
    """All printed output of a notebook, in order."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                parts.append(output["text"])
            elif output.get("output_type") == "error":
                parts.append(f"ERROR {output['ename']}: {output['evalue']}")
    return "".join(parts)


def number(text: str, label: str) -> float:
    """The number printed right after ``label`` (a literal string; may be followed by ``=``)."""
    match = re.search(re.escape(label) + r"\s*=?\s*" + NUMBER, text)
    assert match, f"{label!r} not found in the output:\n{text[:3000]}"
    return float(match.group(1))


def widget_views(notebook: Any) -> int:
    return sum(WIDGET_VIEW in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


# ---------------------------------------------------------------------------------------------- all notebooks


def test_every_tutorial_the_issue_asks_for_exists() -> None:
    expected = {
        "01_what_vanishes.ipynb",
        "02_activations.ipynb",
        "03_fixes.ipynb",
        "04_through_time.ipynb",
        "05_transformers.ipynb",
        "06_diagnose_your_model.ipynb",
    }
    assert expected <= set(TUTORIALS)
    assert (NOTEBOOKS / "dashboard.ipynb").is_file()


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: a cell has outputs"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs_headless_in_under_a_minute(name: str) -> None:
    notebook, elapsed = execute(name)
    assert "ERROR" not in text_of(notebook)
    assert elapsed < TIME_LIMIT_S, f"{name} took {elapsed:.0f}s"
    assert widget_views(notebook) >= 1, f"{name} shows no widget"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_cites_its_sources(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "## Sources" in markdown
    assert re.search(r"\(\d{4}\)", markdown), "sources need years"


def test_dashboard_notebook_runs_in_a_kernel() -> None:
    notebook, elapsed = execute("dashboard.ipynb")
    assert "ERROR" not in text_of(notebook)
    assert widget_views(notebook) == 1
    assert elapsed < TIME_LIMIT_S


# ---------------------------------------------------------------------------------------------- the claims


def rows(text: str, pattern: str) -> list[tuple[float, ...]]:
    """Every match of ``pattern`` (``{N}`` marks a number) as a tuple of floats, in printed order."""
    regex = re.escape(pattern).replace(re.escape("{N}"), r"\s*" + NUMBER)
    found = [tuple(float(g) for g in m.groups()) for m in re.finditer(regex, text)]
    assert found, f"{pattern!r} not found in the output:\n{text[:3000]}"
    return found


def test_01_chain_rule_and_sigmoid() -> None:
    out = text_of(execute("01_what_vanishes.ipynb")[0])
    # Claim 1: the gradient is the product of the local slopes.
    autograd = number(out, "autograd d(out)/d(x)")
    product = number(out, "product of the local slopes")
    assert autograd == pytest.approx(product, rel=1e-4)
    # Claim 2: sigmoid' <= 0.25, and ten sigmoid layers shrink the gradient a million-fold or more.
    assert number(out, "max sigmoid'(z)") == pytest.approx(0.25, abs=1e-4)
    ratio = number(out, "sigmoid, depth 10: first/last gradient ratio")
    assert 0 < ratio < 1e-6
    # The theory line is the activations' share (if the weights keep the scale), not a best case.
    assert number(out, "activations' share over 9 layer steps, 0.25**9") == pytest.approx(0.25**9, rel=0.05)
    # Issue 14 (1): not saturation. No hidden unit saturated, slope ~0.245 everywhere; factor = slope x sqrt(1/3).
    assert number(out, "saturated inputs (|z| > 2) in the hidden layers: at most") == 0
    low, high = rows(out, "mean sigmoid'(z) per hidden layer: {N} to {N}")[0]
    assert 0.235 < low <= high < 0.25
    predicted = rows(out, "slope x weight scale = {N} x sqrt(1/3) = {N}")[0][1]
    assert number(out, "average factor per layer") == pytest.approx(predicted, rel=0.15)
    # Depth sets the size; claim 13: shallow nets keep a usable gradient.
    assert number(out, "sigmoid, depth  3: first/last gradient ratio") > 1e-3
    assert number(out, "sigmoid, depth 20: first/last gradient ratio") < 1e-12
    assert "Vanishing gradients" in out
    # Issue 14 (3): forward collapse, 3 seeds: spread falls ~7x per layer, <= 1e-8 past layer 10, loss stays ln 2.
    collapse = rows(out, "spread layer 1 {N}, layer 6 {N}: falls {N}x per layer; largest spread in layers 11-20 {N}; "
                         "layers with exactly zero spread: {N}; loss after 300 steps: {N}")
    assert len(collapse) == 3
    for _, _, per_layer, late, _, loss in collapse:
        assert 5 < per_layer < 9 and late < 1e-8 and loss == pytest.approx(0.6931, abs=0.01)
    assert max(row[4] for row in collapse) >= 1  # some layers are exactly constant across the batch
    # Exercises: width does not change the factor; tanh's dL/dh shrinks ~sqrt(1/3) per layer, nothing saturated.
    assert number(out, "exercise 1: sigmoid, depth 10, width 256: factor per layer") == pytest.approx(0.14, abs=0.03)
    state, weight, saturated, _ = rows(out, "exercise 2: tanh, depth 10: dL/dh factor per layer = {N}, "
                                            "weight-gradient factor = {N}, saturated at most {N}%")[0] + (0,)
    assert 0.5 < state < 0.7 and weight > state and saturated == 0
    depth4 = number(out, "exercise 3: sigmoid, depth 4: ratio")
    assert number(out, "exercise 3: sigmoid, depth 5: ratio") < 1e-3 < depth4


def test_02_activations() -> None:
    out = text_of(execute("02_activations.ipynb")[0])
    # Claim 3: ReLU's slope is exactly 0 or 1.
    slopes = re.findall(r"ReLU slope (\S+):", out)
    assert sorted(slopes) == ["0", "1"]
    # Claim 4: at depth 20 ReLU vanishes with PyTorch's default init and not with He init.
    assert number(out, "relu     depth 20, default init: first/last gradient ratio") < 1e-4
    he = number(out, "relu, depth 20, He init: first/last gradient ratio")
    assert 0.1 < he < 10
    default_acc = number(out, "relu, depth 20, default  init: test accuracy after 500 steps")
    he_acc = number(out, "relu, depth 20, kaiming  init: test accuracy after 500 steps")
    assert he_acc > default_acc + 0.1
    # Issue 14 (8): weight gradients vs state gradients. Biases cause the small weight ratio; He x 2 hides growth.
    def relu(label: str) -> tuple[float, ...]:
        return rows(out, f"relu, {label:<24}: weight-gradient ratio = {{N}}, dL/dh ratio = {{N}}, "
                         "|h| first/last = {N}")[0]

    with_bias, no_bias, he_row, he2 = (relu(k) for k in ("default init", "default init, bias=False", "He init",
                                                         "He init x 2"))
    assert with_bias[0] < 1e-4 and with_bias[1] < 1e-6 and with_bias[2] < 10
    assert no_bias[0] > 1 and no_bias[1] < 1e-6 and no_bias[2] > 1e4  # the input shrinks as fast as dL/dh
    assert 0.1 < he_row[0] < 10 and 0.1 < he_row[1] < 10
    assert 0.05 < he2[0] < 2 and he2[1] > 1e4
    # Issue 14 (2): sigmoid's outputs are not centred; tanh's are.
    sig_low, sig_high = rows(out, "sigmoid  Xavier: mean hidden output {N} to {N}")[0]
    tanh_low, tanh_high = rows(out, "tanh     Xavier: mean hidden output {N} to {N}")[0]
    assert sig_low > 0.3 and sig_high < 0.7 and abs(tanh_low) < 0.05 and abs(tanh_high) < 0.05
    # Seeds x width (Hanin 2018): the seed-to-seed spread of log10 ratio shrinks with width.
    narrow = number(out, "relu + He, depth 20, width   8: log10 ratio std over 8 seeds")
    wide = number(out, "relu + He, depth 20, width 512: log10 ratio std over 8 seeds")
    assert narrow > 3 * wide and wide < 0.3
    # Claim 13: at depth 3 every activation keeps more than 1e-3 of the gradient.
    for name in ("sigmoid", "tanh", "relu", "gelu", "silu", "swiglu"):
        assert number(out, f"{name:<8} depth 3: first/last gradient ratio") > 1e-3
    assert "swiglu, depth 20, residual + LayerNorm : ratio" in out
    # Exercise 1 (issue 14 (2)), 3 seeds: 4x Xavier + bias -W/2 turns sigmoid into tanh; 4x alone stays small.
    seeds = rows(out, "sigmoid 4x Xavier + bias shift: ratio = {N}; 4x Xavier alone: ratio = {N}")
    assert len(seeds) == 3
    for shifted, alone in seeds:
        assert 0.05 < shifted < 5 and 1e-6 < alone < 1e-3
    shifted_acc = number(out, "exercise 1: sigmoid, 4x Xavier + bias shift: test accuracy after 500 steps")
    assert shifted_acc > number(out, "exercise 1: sigmoid, 4x Xavier alone       : test accuracy after 500 steps") + 0.1
    # Exercise 2, 3 seeds: a large learning rate kills the last hidden layer's ReLUs.
    for lr, limit in (("0.1", 0.5), ("3.0", 0.9)):
        label = f"exercise 2, lr {lr}, seed {{N}}: dead units in the last hidden layer = {{N}}%"
        dead = [row[1] for row in rows(out, label)]
        assert len(dead) == 3
        # measured with torch 2.13 / scikit-learn's current data: lr 3 leaves 84 / 98 / 100 % dead, lr 0.1 < 50 %
        assert all(d >= 80 for d in dead) and sum(dead) / 3 >= 90 if lr == "3.0" else all(d < 100 * limit for d in dead)


def test_03_fixes() -> None:
    out = text_of(execute("03_fixes.ipynb")[0])
    assert number(out, "sigmoid, depth 20, none                  : first/last gradient ratio") < 1e-12
    assert number(out, "sigmoid, depth 20, Xavier init           : first/last gradient ratio") < 1e-6
    # Claims 5-7: batch norm, residual connections and layer norm (pre) each restore gradient flow.
    for label in ("residual", "batch norm", "layer norm"):
        ratio = number(out, f"sigmoid, depth 20, {label:<22}: first/last gradient ratio")
        assert 1e-2 < ratio < 100, label
    # Issue 14 (1): post-LN still vanishes; nothing is saturated in the plain net; the residual net works saturated.
    assert number(out, "sigmoid, depth 20, layer norm (post)     : first/last gradient ratio") < 1e-6
    saturation = dict(re.findall(r"sigmoid, depth 20, (.+?)\s*: first/last .*saturated at most (\d+)%", out))
    assert saturation["none"] == "0" and int(saturation["residual"]) > 50
    # Issue 14 (6): a ratio above 1 compounds: deep ReLU + BatchNorm explodes at init.
    bn = [number(out, f"relu + batch norm, depth {d:3d}: first/last gradient ratio") for d in (20, 40, 60, 100)]
    assert 10 < bn[0] < 200 and bn == sorted(bn) and bn[-1] > 1e6
    # Issue 14 (5): ReLU + He + residual without normalization explodes forward while the ratio looks fine.
    res = {int(d): (rms, ratio, growth) for d, rms, ratio, growth in rows(
        out, "relu + He + residual, depth {N}: last hidden |h| (rms) = {N}, first/last gradient ratio = {N}, "
             "|h| grows {N}x per block")}
    assert res[20][0] > 1e3 and 0.01 < res[20][1] < 1 and res[50][0] > 1e9 and 0.01 < res[50][1] < 1
    assert all(1.5 < growth < 1.9 for _, _, growth in res.values())
    plain = number(out, "none                  : test accuracy after 500 steps")
    assert number(out, "batch norm            : test accuracy after 500 steps") > plain + 0.2
    assert number(out, "residual + layer norm : test accuracy after 500 steps") > plain + 0.1
    assert number(out, "layer norm (post)     : test accuracy after 500 steps") < 0.6
    # Exercises: BatchNorm crosses 1e3 between depth 30 and 40; post-LN collapses the batch spread, pre-LN does not.
    assert number(out, "exercise 1: relu + batch norm, depth 30: ratio") < 1e3 < number(
        out, "exercise 1: relu + batch norm, depth 40: ratio")
    pre = rows(out, "exercise 2: layer norm (pre): batch spread at layers 1, 10, 20 = {N} {N} {N}")[0]
    post = rows(out, "exercise 2: layer norm (post): batch spread at layers 1, 10, 20 = {N} {N} {N}")[0]
    assert pre[2] > 1e-2 and post[2] < 1e-6


def test_04_through_time() -> None:
    out = text_of(execute("04_through_time.ipynb")[0])
    ratio = lambda label: number(out, f"{label:<22}: time ratio (step 0 / step 49)")  # noqa: E731
    # Claim 9: recurrent nets without skip paths vanish through time.
    assert ratio("vanilla RNN (tanh)") < 1e-6
    # Claim 10: the LSTM carries the gradient only when its forget gate is open.
    assert ratio("LSTM, forget bias 0") < 1e-6
    assert ratio("LSTM, forget bias 0") < ratio("LSTM, forget bias 1") < ratio("LSTM, forget bias 3")
    assert ratio("LSTM, forget bias 3") > 0.1
    # Claim 11: identity-initialized ReLU RNNs keep gradients alive.
    assert ratio("IRNN (ReLU, identity)") > 0.1
    # Issue 14 (7): PyTorch's default forget bias is a random sum of two uniforms, not 0.
    bound, low, high = rows(out, "each bias uniform in +-{N}; forget-gate total bias from {N} to {N}")[0]
    assert -2 * bound <= low < -0.1 and 0.1 < high <= 2 * bound
    assert number(out, "GRU, T=50: test MSE after 300 steps") < 0.05
    assert number(out, "vanilla RNN (tanh)    : test MSE after 400 steps") > 0.1
    # Issue 14 (7): at T=20 every LSTM bias 0/1/3 learns, and the gates open (time ratio of order 1 after training).
    for bias in (0, 1, 3):
        mse, at_init, trained = rows(out, f"LSTM, forget bias {bias}   : test MSE after 400 steps = {{N}}; "
                                          "T=20 time ratio at step 1 = {N}, after 400 steps = {N}")[0]
        assert mse < 0.02 and trained > 0.1, bias
        if bias == 0:
            assert at_init < 1e-3
    # Exploding through time: spectral radius above 1 compounds (Pascanu et al. 2013).
    irnn = [row[1] for row in rows(out, "relu RNN, identity x {N}: spectral radius {N}, time ratio = {N}")]
    times = [row[2] for row in rows(out, "relu RNN, identity x {N}: spectral radius {N}, time ratio = {N}")]
    assert irnn == pytest.approx([1.0, 1.05, 1.1], abs=0.01)
    assert times[0] < 2 < times[1] < times[2] and times[2] > 20
    tanh_times = [row[2] for row in rows(out, "tanh RNN, orthogonal x {N}: spectral radius {N}, time ratio = {N}")]
    assert tanh_times[0] < 1 < 100 < tanh_times[1] < tanh_times[2]
    # Exercise 2: a nearly closed forget gate (bias -2) does not open in 400 steps.
    assert rows(out, "exercise 2: LSTM, forget bias -2, T=20: time ratio {N} -> {N}, test MSE after 400 steps = {N}"
                )[0][2] > 0.1


def test_05_transformers() -> None:
    out = text_of(execute("05_transformers.ipynb")[0])
    # Claim 8: residual + LayerNorm keep a deep transformer trainable; without both the gradient is gone.
    assert 0.1 < number(out, "transformer, depth 24, residual + LayerNorm: first/last gradient ratio") < 100
    assert 0 < number(out, "transformer, depth 24, neither             : first/last gradient ratio") < 1e-20
    assert number(out, "neither:") == 0  # issue 19 item 1: tiny norms read their value, not exactly zero
    assert 0 < number(out, "float64, neither: first/last gradient ratio") < 1e-12
    # Issue 14 (4): a healthy ratio is necessary, not sufficient. LayerNorm alone reads ~1 and stays at chance
    # (rank collapse: its tokens are identical); all four layouts are trained.
    def layout(label: str) -> tuple[float, ...]:
        return rows(out, f"12 blocks, {label:<20}: ratio at step 1 = {{N}}, test accuracy after 150 steps = {{N}}, "
                         "token spread {N} -> {N}")[0]

    both, residual, norm_only, neither = (layout(k) for k in ("residual + LayerNorm", "residual only",
                                                              "LayerNorm only", "neither"))
    assert both[1] > 0.9 and norm_only[1] < 0.2 and neither[1] < 0.2
    assert residual[1] > norm_only[1] + 0.1
    assert 0.1 < norm_only[0] < 10 and norm_only[2] < 1e-4 and both[2] > 1e-2
    spreads = [row[1] for row in rows(out, "exercise 1: LayerNorm only, depth {N}: token spread at init = {N}")]
    assert spreads[0] > 100 * spreads[-1]


def test_06_diagnose_your_model() -> None:
    notebook, _ = execute("06_diagnose_your_model.ipynb")
    out = text_of(notebook)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert re.search(r"monitor: 300 updates, [1-9]\d* gradient reads", out)
    # Claim 14: a larger learning rate does not bring vanished gradients back; it blows up the late layers.
    low = re.search(r"lr   0\.1: loss .* -> " + NUMBER + r"; .*first hidden layer " + NUMBER + r", last hidden layer "
                    + NUMBER, out)
    high = re.search(r"lr 100\.0: loss .* -> " + NUMBER + r"; .*first hidden layer " + NUMBER + r", last hidden layer "
                     + NUMBER, out)
    assert low and high, out[:2000]
    assert float(low.group(2)) < 1e-6 and float(high.group(2)) < 1e-3
    assert float(high.group(3)) > 100 * float(low.group(3))
    assert float(high.group(1)) > 2 * float(low.group(1))
    # Claim 12: frozen layers are reported as frozen, not as vanishing.
    assert "diagnosis: frozen" in out
    assert out.count("(frozen)") == 3
    # Claim 15: loss falls, accuracy rises, yet layers never learned; only the history shows it.
    trained = re.search(f"training loss {NUMBER} -> {NUMBER}, test accuracy {NUMBER} -> {NUMBER}", out)
    assert trained, out[:3000]
    assert float(trained.group(2)) < 0.5 * float(trained.group(1)) and float(trained.group(4)) > 0.8
    assert re.search(r"layer 0: gradient norm \S+, moved 0\.0e\+00", out)
    assert "with the history: dead - Layers that never learned" in out
    # Claim 16: exploding gradients diverge to inf/NaN.
    assert "-> exploding" in out and "-> nonfinite" in out
    # Claim 16 revisited: that was learning-rate divergence (the ratio is healthy at step 1), section 5 no longer
    # calls it the mirror image (issue 22, item 13) ...
    assert re.search(r"step 1: loss \S+, largest layer gradient \S+, first/last ratio \S+ -> healthy", out)
    assert "## 5. A loss that explodes: learning-rate divergence" in markdown
    assert "## 5. The mirror image" not in markdown
    # ... deep BatchNorm is a factor that neither a smaller init nor a learning rate removes; skips do, and the
    # diagnosis says so, as the text does (issue 22, item 15).
    deep_bn = {label: rows(out, f"depth 40, ReLU + BatchNorm, {label:<16}: first/last ratio {{N}}")[0][0]
               for label in ("He init", "He x 0.1", "skip connections")}
    assert deep_bn["He init"] > 1e3 and deep_bn["He x 0.1"] > 1e3 and deep_bn["skip connections"] < 100, deep_bn
    assert re.search(r"He init\s*: first/last ratio \S+ -> exploding", out)
    assert re.search(r"skip connections\s*: first/last ratio \S+ -> healthy", out)
    advice = re.search(r"the diagnosis advises: (.*)", out)
    assert advice and "skip connections" in advice.group(1), out[-3000:]
    assert not re.search(r"\b(lower|reduce) the learning rate", advice.group(1), re.IGNORECASE), advice.group(1)
    for paragraph in markdown.split("\n\n"):
        if "BatchNorm" in paragraph:
            assert not re.search(r"\b(lower|reduce) the learning rate", paragraph, re.IGNORECASE), paragraph
    # ... compounding over time: clipping keeps the run finite; with Adam it makes the x1.05 RNN trainable (item 6).
    rnn = ("RNN x 1.05, {}, clip={}: time ratio at step 1 = {{N}}, largest layer gradient {{N}}; after 300 steps: "
           "test MSE {{N}}")
    diverged = (r"RNN x 1\.05, sgd lr 0\.01, clip=None: time ratio at step 1 = \S+, largest layer gradient \S+; "
                r"after \d+ steps: div")
    assert re.search(diverged, out), out
    sgd_clip = rows(out, rnn.format("sgd lr 0.01", "1.0"))[0]
    adam = rows(out, rnn.format("adam lr 0.001", "None"))[0]
    adam_clip = rows(out, rnn.format("adam lr 0.001", "1.0"))[0]
    assert number(out, "sgd lr 0.01, clip=1.0: time ratio at step 1") > 1
    assert sgd_clip[0] == adam[0] == adam_clip[0], "the time ratio at step 1 is the same: clipping keeps the factor"
    assert 0.1 < sgd_clip[2] < 0.3 and 0.12 < adam[2] < 0.3, "without clipping Adam only guesses, as SGD + clip does"
    assert adam_clip[2] < 0.12 and adam_clip[2] < 0.6 * min(sgd_clip[2], adam[2])
    # Issue 14 (3) and issue 22 (1): SGD does not move the first layer; Adam at its default eps moves it by
    # lr * g / eps only (the gradient is far below eps) and the loss stays at ln 2; with eps = 1e-30 the net learns.
    optimizer_row = ("{label} seed {{N}}: loss {{N}}, test accuracy {{N}}; first-layer gradient per weight {{N}}; "
                     "update/weight per step: first layer {{N}}, last hidden layer {{N}}; first layer moved {{N}} "
                     "in 300 steps; batch spread at the last hidden layer {{N}}")
    found = {label: rows(out, optimizer_row.format(label=f"{label:<20}"))
             for label in ("sgd lr 0.1", "adam lr 0.001 eps 1e-08", "adam lr 0.001 eps 1e-30")}
    assert [len(v) for v in found.values()] == [1, 3, 3], found
    for label, runs in found.items():
        for _, loss, accuracy, grad, first, last, moved, spread in runs:
            if label == "adam lr 0.001 eps 1e-30":
                assert loss < 0.5 and accuracy >= 0.7 and spread > 1e-3 and 1e-4 < first < 1e-2, runs
                continue
            assert loss == pytest.approx(0.6931, abs=0.01) and accuracy < 0.6 and spread < 1e-6 and 1e-4 < last < 1e-2
            assert grad < 1e-10, "the first layer's gradient is far below Adam's eps (1e-8)"
            if label == "sgd lr 0.1":
                assert first == 0 and moved < 1e-6
            else:
                assert 1e-7 < first < 1e-4 and moved > 1e-4
    stuck = max(run[2] for run in found["adam lr 0.001 eps 1e-08"])
    assert min(run[2] for run in found["adam lr 0.001 eps 1e-30"]) > stuck + 0.2
    # Dying ReLU, 3 seeds: lr 3 (clipped) leaves the last hidden layer (almost) all dead, at chance.
    dead = re.findall(r"lr 3 \+ clip, seed \d: dead units per layer (.*?); diagnosis", out)
    shares = [float(d.split()[-1].rstrip("%")) for d in dead]
    assert len(shares) == 3 and all(s >= 80 for s in shares) and sum(shares) / 3 >= 90, shares
    # Solutions do not print their answers on Run All: they sit in collapsed blocks (test_06_solutions runs them).
    assert markdown.count("<details><summary>Solution") == 3
    assert "exercise " not in out


_solutions: dict[str, str] = {}


def run_06_solutions() -> str:
    """The printed output of notebook 06's collapsed solutions, run in a kernel after the notebook's setup cell."""
    if "06" not in _solutions:
        notebook = nbformat.read(NOTEBOOKS / "06_diagnose_your_model.ipynb", as_version=4)
        setup = next(c for c in notebook.cells if c.get("id") == "06_diagnose_your_model-01")
        markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
        blocks = re.findall(r"<details><summary>Solution \d</summary>\s*```python\n(.*?)```", markdown, re.DOTALL)
        assert len(blocks) == 3, "three collapsed solutions with their code"
        notebook.cells = [setup, *(nbformat.v4.new_code_cell(code) for code in blocks)]
        NotebookClient(notebook, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        (ARTIFACTS / "notebooks").mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, str(ARTIFACTS / "notebooks" / "06_solutions.ipynb"))  # for people to read
        _solutions["06"] = text_of(notebook)
    return _solutions["06"]


def test_06_solutions() -> None:
    """The collapsed solutions run as written and print what the exercises teach."""
    out = run_06_solutions()
    assert "ERROR" not in out, out
    # Exercise 1: clipping alone rescues learning-rate divergence.
    clipped = re.search(f"exercise 1: lr 1 \\+ clip 1: diverged False, loss {NUMBER}, test accuracy {NUMBER}", out)
    assert clipped and float(clipped.group(2)) > 0.6, out
    # Exercise 2: a healthy net's update-to-data ratio is near the 1e-3 rule of thumb, with SGD and Adam.
    for name in ("sgd ", "adam"):
        first, last = rows(out, f"exercise 2: relu + He, {name}: update/weight per step, first hidden layer {{N}}, "
                                "last hidden layer {N}")[0]
        assert 1e-4 < first < 1e-2 and 1e-4 < last < 1e-2
    # Exercise 3: the learner's tensor hook reads dL/dh exactly as gw.ActivationStats does; it vanishes on the way.
    for layer in (" 5", "21"):
        pattern = f"exercise 3: sigmoid {layer}: |dL/dh| from my hook {{N}}, from ActivationStats {{N}}"
        mine, stats = rows(out, pattern)[0]
        assert mine == pytest.approx(stats, rel=1e-4) and mine > 0
    assert number(out, "exercise 3: third / last sigmoid:") < 1e-5


def test_06_your_language_model() -> None:
    """Section 7 of notebook 06: a tied GPT is judged by its blocks, and AMP reads divide by the loss scale."""
    notebook, _ = execute("06_diagnose_your_model.ipynb")
    out = text_of(notebook)
    healthy = re.search(r"tied GPT, residual \+ LayerNorm: healthy, blocks h\.0 vs h\.11, ratio " + NUMBER, out)
    vanishing = re.search(r"tied GPT, neither: vanishing, blocks h\.0 vs h\.11, ratio " + NUMBER, out)
    assert healthy and vanishing, out[-3000:]
    assert 0.1 < float(healthy.group(1)) < 10
    assert float(vanishing.group(1)) < 1e-6
    assert "the wte row also holds: lm_head" in out
    counted = re.search(r"parameters counted: (\d+) \(model\.parameters\(\): (\d+)\)", out)
    assert counted and counted.group(1) == counted.group(2), "the tied weight is counted once"
    scale = number(out, "loss scale")
    assert scale == 65536
    assert "read without scaler=: amp_unscaled" in out and "read with scaler=scaler: healthy" in out
    scaled = number(out, "read without scaler=: amp_unscaled, largest layer gradient")
    unscaled = number(out, "read with scaler=scaler: healthy, largest layer gradient")
    assert unscaled == pytest.approx(number(out, "after scaler.unscale_(): largest layer gradient"), rel=1e-2)
    assert scaled == pytest.approx(scale * unscaled, rel=1e-2)
    assert re.search(r"monitor after 20 AMP steps: healthy, last step drawn: 20", out), out[-1500:]


def test_07_watch_a_run() -> None:
    """The example script logs steps 1, 5, ..., 60 (every 5th and the first) and keeps every step's loss."""
    notebook, _ = execute("07_watch_a_run.ipynb")
    text = text_of(notebook)
    assert re.search(r"records: 13\s+layers: 15\s+steps 1-60", text), text  # the tied head is one row
    assert "losses kept: 60" in text
