"""Each figure writes a real PNG with the expected panels and footnote, and rejects bad frames."""

import warnings

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from inilora.report import figures

NOTE = "GSM8K stand-in: synthetic arithmetic."
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, drawn):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[1] > 300 and image.shape[0] > 200
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary behind
    assert NOTE in " ".join(" ".join(drawn.texts).split())


def accuracy_rows(n, **cols):
    """A frame of ``n`` accuracy rows; the first has one seed (NaN std), the rest three."""
    return pd.DataFrame({"model": "tiny", "accuracy": np.linspace(0.3, 0.6, n),
                         "accuracy_std": [np.nan] + [0.02] * (n - 1), "seeds": [1] + [3] * (n - 1),
                         "metric": "chain_sum:accuracy", **cols})


def test_moving_average_is_centred_and_keeps_the_ends():
    np.testing.assert_allclose(figures.moving_average([1, 2, 3, 4, 10], 3), [1.5, 2, 3, 17 / 3, 7])
    np.testing.assert_allclose(figures.moving_average([5.0], 3), [5.0])


def test_figure2(tmp_path):
    df = accuracy_rows(5, iterations=[0, 10, 100, 1000, 10000], mse=[1.0, 0.3, 0.05, 0.01, 0.009])
    out = tmp_path / "fig2.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN std must draw no bar, not warn
        drawn = figures.figure2(df, out, note=NOTE)
    assert drawn.panels == ["accuracy vs decomposition loss", "decomposition loss vs iterations"]
    assert "Figure 2: downstream accuracy vs decomposition loss" in drawn.texts
    assert_png(out, drawn)


def test_figure2_several_models(tmp_path):
    a = accuracy_rows(3, iterations=[0, 10, 100], mse=[1.0, 0.5, 0.2])
    df = pd.concat([a, a.assign(model="other", accuracy=a["accuracy"] + 0.1)])
    drawn = figures.figure2(df, tmp_path / "fig2.png", note=NOTE)
    assert len(drawn.panels) == 2


def test_figure3_with_reference(tmp_path):
    df = accuracy_rows(4, std=[1e-3, 1e-2, 1e-1, 1.0])
    out = tmp_path / "fig3.png"
    drawn = figures.figure3(df, out, note=NOTE, reference={"tiny": 0.4}, title="custom title")
    assert drawn.panels == ["accuracy vs init std"]
    assert "custom title" in drawn.texts
    assert_png(out, drawn)


def test_figure4(tmp_path):
    acc = accuracy_rows(3, method=["lora", "inilora", "gaussian"])
    rng = np.random.default_rng(0)
    values = {"lora": {"A": rng.uniform(-0.1, 0.1, 500), "B": np.zeros(500)},
              "inilora": {"A": rng.normal(0, 0.05, 500), "B": rng.normal(0, 0.05, 500)}}
    out = tmp_path / "sub" / "fig4.png"
    drawn = figures.figure4(acc, values, out, note=NOTE)
    assert drawn.panels == ["accuracy per initialisation", "initial A entries", "initial B entries"]
    assert_png(out, drawn)


def test_figure4_all_zero_b_and_bad_values(tmp_path):
    acc = accuracy_rows(1, method=["lora"])
    drawn = figures.figure4(acc, {"lora": {"A": np.linspace(-1, 1, 50), "B": np.zeros(50)}}, tmp_path / "f.png")
    assert len(drawn.panels) == 3
    with pytest.raises(ValueError, match="no data for figure 4"):
        figures.figure4(acc, {}, tmp_path / "f.png")
    with pytest.raises(ValueError, match=r"\['lora'\] lack 'A' or 'B'"):
        figures.figure4(acc, {"lora": {"A": np.zeros(3)}}, tmp_path / "f.png")


def loss_frame(ranks, seeds):
    rows = [{"model": "tiny", "method": method, "rank": r, "seed": s, "step": step,
             "loss": 2.0 / (1 + step) + 0.1 * s + (0.2 if method == "lora" else 0.0)}
            for method in ("inilora", "lora") for r in ranks for s in seeds for step in range(0, 50, 5)]
    return pd.DataFrame(rows)


def test_figure5_one_panel_per_rank(tmp_path):
    out = tmp_path / "fig5.png"
    drawn = figures.figure5(loss_frame([8, 4], [0, 1, 2]), out, note=NOTE, smooth=0.6)
    assert drawn.panels == ["rank 4", "rank 8"]
    assert_png(out, drawn)
    drawn = figures.figure5(loss_frame([16], [0]), out, note=NOTE)
    assert drawn.panels == ["rank 16"]
    with pytest.raises(ValueError, match=r"smooth=1\.0"):
        figures.figure5(loss_frame([8], [0]), out, smooth=1.0)


def test_figure6(tmp_path):
    df = pd.concat([accuracy_rows(3, method=m, rank=r, lr=[1e-5, 1e-4, 1e-3])
                    for m in ("lora", "inilora") for r in (8, 16)])
    out = tmp_path / "fig6.png"
    drawn = figures.figure6(df, out, note=NOTE)
    assert drawn.panels == ["accuracy vs learning rate"]
    assert_png(out, drawn)


@pytest.mark.parametrize("name, df", [
    ("figure2", accuracy_rows(2, iterations=[0, 1])),
    ("figure3", accuracy_rows(2).drop(columns="accuracy_std").assign(std=1.0)),
    ("figure5", loss_frame([8], [0]).drop(columns=["seed", "loss"])),
    ("figure6", accuracy_rows(2, method="lora", rank=8)),
])
def test_missing_columns_are_named(tmp_path, name, df):
    missing = {"figure2": "'mse'", "figure3": "'accuracy_std'", "figure5": "'seed', 'loss'", "figure6": "'lr'"}[name]
    with pytest.raises(ValueError, match=rf"{name[-1]}: missing columns \[{missing}\]"):
        getattr(figures, name)(df, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name, number, columns", [
    ("figure2", 2, ["iterations", "mse"]), ("figure3", 3, ["std"]), ("figure6", 6, ["method", "rank", "lr"]),
])
def test_empty_frame(tmp_path, name, number, columns):
    df = accuracy_rows(1, **{c: 1.0 for c in columns}).iloc[:0]
    with pytest.raises(ValueError, match=f"no data for figure {number}: expected one row per"):
        getattr(figures, name)(df, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no data for figure 5"):
        figures.figure5(loss_frame([8], [0]).iloc[:0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no data for figure 4"):
        figures.figure4(accuracy_rows(1, method="lora").iloc[:0], {"a": {"A": [0.0], "B": [0.0]}}, tmp_path / "x.png")
