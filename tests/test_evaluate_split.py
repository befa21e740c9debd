"""Which split ``python -m fer_core.evaluate`` evaluates: the only one a file has, else today's order."""
from __future__ import annotations

import json

import numpy as np

from fer_core.lab.data import load_dataset
from fer_core.lab.evaluate import main as evaluate_main
from fer_core.lab.evaluate import pick_split
from tests._fer_synthetic import write_fer_csv


def test_a_file_of_only_private_test_rows_is_evaluated_and_named(tmp_path, capsys):
    csv_path = write_fer_csv(tmp_path / "test.csv", n_per_class=3, usages=("PrivateTest",))
    out = tmp_path / "eval"
    assert evaluate_main(["--model", "default", "--data", str(csv_path), "--out", str(out), "--no-tta",
                          "--mistakes", "2"]) == 0
    printed = capsys.readouterr().out
    assert "evaluating split PrivateTest (21 faces; the only split in the data)" in printed
    result = json.loads((out / "metrics.json").read_text())
    assert result["split"] == "PrivateTest" and result["n"] == 21
    assert np.asarray(result["confusion_matrix"]).sum() == 21
    assert "split <code>PrivateTest</code>" in (out / "report.html").read_text()


def test_several_splits_keep_the_default_order(tmp_path):
    splits, _ = load_dataset(write_fer_csv(tmp_path / "all.csv", n_per_class=1,
                                           usages=("Training", "PrivateTest", "PublicTest")))
    assert pick_split(splits, None)[0] == "PublicTest"
    del splits["PublicTest"]
    assert pick_split(splits, None)[0] == "Training"  # as before: Training comes before an unlisted split
    assert pick_split(splits, "PrivateTest")[0] == "PrivateTest"
