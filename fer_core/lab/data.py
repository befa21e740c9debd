"""Labelled face datasets for training and evaluation: the FER2013 CSV and class-folder trees.

Both loaders return uint8 face crops plus integer labels in EMOTIONS order. Bad rows are
collected in a report (with row numbers / paths) and skipped, never silently dropped.
"""
from __future__ import annotations

import gzip
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_core.decode import IMAGE_SUFFIXES, decode_image
from fer_core.errors import ImageError
from fer_core.labels import EMOTIONS, canonical_emotion

log = logging.getLogger(__name__)

FER_SIDE = 48
FER_PIXELS = FER_SIDE * FER_SIDE
FER_USAGES = ("Training", "PublicTest", "PrivateTest")


@dataclass(frozen=True)
class BadRow:
    """One skipped input: where it was (CSV line number or file path) and why."""

    where: str
    reason: str


@dataclass
class FaceDataset:
    """uint8 face crops (N, H, W) with labels (N,) indexing EMOTIONS."""

    images: np.ndarray
    labels: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray, name: str | None = None) -> "FaceDataset":
        return FaceDataset(self.images[index], self.labels[index], name or self.name)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(EMOTIONS))
        return {e: int(c) for e, c in zip(EMOTIONS, counts)}


@dataclass
class LoadReport:
    """What a loader read and what it skipped; printed after every load."""

    source: str
    n_read: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)

    def summary(self, limit: int = 10) -> str:
        lines = [f"{self.source}: {self.n_read} rows kept, {len(self.bad_rows)} skipped"]
        lines += [f"  skipped {b.where}: {b.reason}" for b in self.bad_rows[:limit]]
        if len(self.bad_rows) > limit:
            lines.append(f"  ... and {len(self.bad_rows) - limit} more")
        return "\n".join(lines)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def load_fer2013_csv(path: str | Path) -> tuple[dict[str, FaceDataset], LoadReport]:
    """Read a FER2013 CSV (`emotion,pixels,Usage`; .csv or .csv.gz) into one dataset per Usage.

    Rows with a wrong pixel count, a non-numeric pixel, an unknown label or usage are
    skipped and listed in the report with their line number (the header is line 1).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"FER2013 CSV not found: {path}. Pass the path to fer2013.csv or fer2013.csv.gz")
    report = LoadReport(str(path))
    images: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[int]] = {}
    with _open_text(path) as fh:
        header = fh.readline().strip().split(",")
        want = ["emotion", "pixels", "Usage"]
        if [h.strip() for h in header[:3]] != want:
            raise ValueError(f"{path}: header is {header}, expected {want} (Kaggle FER2013 schema)")
        for line_no, line in enumerate(fh, start=2):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",")
            if len(parts) != 3:
                report.bad_rows.append(BadRow(f"line {line_no}", f"expected 3 fields, got {len(parts)}"))
                continue
            label_s, pixels_s, usage = (p.strip() for p in parts)
            try:
                label = int(label_s)
            except ValueError:
                report.bad_rows.append(BadRow(f"line {line_no}", f"label {label_s!r} is not an integer 0-6"))
                continue
            if not 0 <= label < len(EMOTIONS):
                report.bad_rows.append(BadRow(f"line {line_no}", f"unknown label {label} (expected 0-6)"))
                continue
            if usage not in FER_USAGES:
                report.bad_rows.append(BadRow(f"line {line_no}", f"unknown Usage {usage!r} (expected {FER_USAGES})"))
                continue
            try:
                px = np.array(pixels_s.split(), dtype=np.int32)
            except ValueError:
                report.bad_rows.append(BadRow(f"line {line_no}", "pixels contain a non-integer value"))
                continue
            if px.size != FER_PIXELS:
                report.bad_rows.append(BadRow(f"line {line_no}", f"{px.size} pixels, expected {FER_PIXELS}"))
                continue
            if px.min() < 0 or px.max() > 255:
                report.bad_rows.append(BadRow(f"line {line_no}", "pixel values outside 0-255"))
                continue
            images.setdefault(usage, []).append(px.astype(np.uint8).reshape(FER_SIDE, FER_SIDE))
            labels.setdefault(usage, []).append(label)
            report.n_read += 1
    out = {
        usage: FaceDataset(np.stack(images[usage]), np.asarray(labels[usage], np.int64), f"{path.name}:{usage}")
        for usage in images
    }
    if report.bad_rows:
        log.warning(report.summary())
    return out, report


def load_class_folders(root: str | Path, size: int = FER_SIDE) -> tuple[dict[str, FaceDataset], LoadReport]:
    """Read `root/<split>/<class>/*.jpg` (or `root/<class>/*.jpg` as a single 'train' split).

    Class names are mapped onto FER2013's by name (synonyms like 'happiness' accepted);
    unknown class folders and unreadable files are reported and skipped. Images are
    converted to grey and resized to size x size.
    """
    import cv2

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"class-folder dataset not found: {root}")
    report = LoadReport(str(root))
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_names = {"train", "val", "valid", "validation", "test"}
    if subdirs and all(p.name.lower() in split_names for p in subdirs):
        splits = {("val" if p.name.lower() in {"valid", "validation"} else p.name.lower()): p for p in subdirs}
    else:
        splits = {"train": root}
    out: dict[str, FaceDataset] = {}
    for split, split_dir in splits.items():
        imgs: list[np.ndarray] = []
        labs: list[int] = []
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            try:
                label = EMOTIONS.index(canonical_emotion(class_dir.name))
            except KeyError as exc:
                report.bad_rows.append(BadRow(str(class_dir), str(exc.args[0])))
                continue
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:  # the job's decoder: same formats, EXIF orientation and alpha handling as at inference
                    grey = cv2.cvtColor(decode_image(f.read_bytes()), cv2.COLOR_RGB2GRAY)
                except ImageError as exc:
                    report.bad_rows.append(BadRow(str(f), f"not a decodable image ({exc})"))
                    continue
                if grey.shape != (size, size):
                    interp = cv2.INTER_AREA if grey.shape[0] > size else cv2.INTER_LINEAR
                    grey = cv2.resize(grey, (size, size), interpolation=interp)
                imgs.append(grey)
                labs.append(label)
                report.n_read += 1
        if imgs:
            out[split] = FaceDataset(np.stack(imgs), np.asarray(labs, np.int64), f"{root.name}:{split}")
    if report.bad_rows:
        log.warning(report.summary())
    return out, report


def load_dataset(path: str | Path, size: int = FER_SIDE) -> tuple[dict[str, FaceDataset], LoadReport]:
    """FER2013 CSV (.csv/.csv.gz) or a class-folder tree, by what the path is.

    Split names are normalised: FER2013's Training/PublicTest/PrivateTest stay as they are;
    folder trees give train/val/test.
    """
    p = Path(path)
    if p.is_dir():
        return load_class_folders(p, size)
    if p.name.endswith((".csv", ".csv.gz")):
        return load_fer2013_csv(p)
    raise ValueError(f"{path}: expected a FER2013 .csv/.csv.gz file or a folder of class folders")


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of every class held out, chosen reproducibly.

    A class with at least two samples always keeps one in each part when 0 < fraction < 1.
    """
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        if 0 < fraction < 1 and len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def stratified_kfold(labels: np.ndarray, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, val) index pairs; every sample is in exactly one val fold, classes balanced per fold."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        # deal members of this class round-robin, starting at a class-dependent offset
        fold_of[idx] = (np.arange(len(idx)) + int(c)) % k
    all_idx = np.arange(len(labels))
    return [(all_idx[fold_of != f], all_idx[fold_of == f]) for f in range(k)]
