import gzip

import cv2
import numpy as np
import pytest

from _fer_synthetic import write_fer_csv
from fer_core.lab.data import load_class_folders, load_dataset, load_fer2013_csv, stratified_kfold, stratified_split


def test_fer_csv_splits_and_bad_row_report(tmp_path):
    bad = (
        "9," + " ".join(["0"] * 2304) + ",Training",  # line 2: unknown label
        "3," + " ".join(["0"] * 100) + ",Training",  # line 3: wrong pixel count
        "3," + " ".join(["0"] * 2304) + ",Validation",  # line 4: unknown usage
        "x," + " ".join(["0"] * 2304) + ",Training",  # line 5: label not an integer
        "2," + " ".join(["300"] * 2304) + ",Training",  # line 6: out of range
    )
    path = write_fer_csv(tmp_path / "fer.csv", n_per_class=3, bad_lines=bad)
    splits, report = load_fer2013_csv(path)
    assert set(splits) == {"Training", "PublicTest"}
    assert len(splits["Training"]) == 21 and splits["Training"].images.shape == (21, 48, 48)
    assert splits["Training"].images.dtype == np.uint8
    assert [b.where for b in report.bad_rows] == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    reasons = " | ".join(b.reason for b in report.bad_rows)
    for needle in ("unknown label 9", "100 pixels, expected 2304", "unknown Usage", "not an integer", "outside 0-255"):
        assert needle in reasons
    assert "5 skipped" in report.summary()


def test_gzipped_csv_reads_the_same(tmp_path):
    path = write_fer_csv(tmp_path / "fer.csv", n_per_class=2)
    gz = tmp_path / "fer.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    a, _ = load_dataset(path)
    b, _ = load_dataset(gz)
    assert np.array_equal(a["Training"].images, b["Training"].images)


def test_wrong_header_is_a_clear_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("label,pixels,split\n")
    with pytest.raises(ValueError, match="expected"):
        load_fer2013_csv(p)


def test_class_folders_map_synonyms_and_report_unknown(tmp_path):
    for split in ("train", "test"):
        for cls in ("Happiness", "anger", "contempt", "bored"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            cv2.imwrite(str(d / "a.png"), np.full((64, 64), 128, np.uint8))
        (tmp_path / split / "anger" / "broken.jpg").write_bytes(b"not an image")
    splits, report = load_class_folders(tmp_path)
    assert set(splits) == {"train", "test"}
    assert splits["train"].class_counts() == {"angry": 1, "disgust": 1, "fear": 0, "happy": 1, "sad": 0, "surprise": 0, "neutral": 0}
    assert splits["train"].images.shape[1:] == (48, 48)
    wheres = [b.where for b in report.bad_rows]
    assert any(w.endswith("bored") for w in wheres) and any(w.endswith("broken.jpg") for w in wheres)


def test_stratified_kfold_is_disjoint_covering_and_balanced():
    labels = np.repeat(np.arange(7), [50, 7, 40, 90, 60, 30, 61])
    folds = stratified_kfold(labels, 5, seed=3)
    vals = [v for _, v in folds]
    assert sorted(np.concatenate(vals).tolist()) == list(range(len(labels)))  # each sample once
    for tr, va in folds:
        assert not set(tr) & set(va)
        assert len(tr) + len(va) == len(labels)
        for c in range(7):
            share = (labels[va] == c).sum() / (labels == c).sum()
            assert abs(share - 0.2) <= 1 / (labels == c).sum() + 1e-9
    with pytest.raises(ValueError):
        stratified_kfold(labels, 1)


def test_stratified_split_fraction_per_class():
    labels = np.repeat(np.arange(7), 20)
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert len(held) == 14 and not set(keep) & set(held)
    assert np.bincount(labels[held]).tolist() == [2] * 7
