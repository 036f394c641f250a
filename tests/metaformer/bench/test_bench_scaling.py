"""The mixer scaling study writes its table, CSV and plot, with one row per mixer and size."""

import pandas as pd
import pytest

from metaformer.bench.scaling import exponents, main


def test_scaling_study_writes_table_csv_and_plot(tmp_path):
    out = tmp_path / "scaling"
    argv = ["--mixers", "pool", "attn", "mlp", "--sizes", "4", "8", "--dim", "16", "--batch-size", "2",
            "--reps", "1", "--min-seconds", "0", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    df = pd.read_csv(out / "scaling.csv")
    assert len(df) == 6 and set(df["mixer"]) == {"pool", "attn", "mlp"}
    assert (df["ms"] > 0).all() and list(df["tokens"].unique()) == [16, 64]
    assert "exponent" in (out / "scaling.md").read_text()
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exponent_is_the_log_log_slope_over_the_largest_sizes():
    df = pd.DataFrame(
        {
            "mixer": ["lin"] * 3 + ["quad"] * 3,
            "tokens": [10, 100, 1000] * 2,
            "ms": [5.0, 1.0, 10.0, 1.0, 100.0, 10_000.0],
        }
    )
    assert exponents(df).to_dict() == pytest.approx({"lin": 1.0, "quad": 2.0})


def test_unknown_mixer_is_refused(capsys):
    assert main(["--mixers", "poool", "--sizes", "4"]) == 2
    assert "unknown mixer(s) poool" in capsys.readouterr().err
