"""The table contract (fer_core/tables.py) and the one KPI implementation (fer_core/kpis.py)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from fer_core import kpis, tables
from fer_core.errors import IMAGE_STATUSES, SCORED_STATUSES
from fer_core.labels import EMOTIONS
from fer_core.sentiment import SentimentConfig, score_sentiment
from fer_core.types import Face, FaceResult, ImageResult

UTC = dt.timezone.utc


@pytest.mark.parametrize("name", sorted(tables.SCHEMAS))
def test_every_table_has_one_schema_and_widened_read_types(name) -> None:
    schema = tables.schema_of(name)
    assert len(set(schema.names)) == len(schema.names)
    types = tables.read_types(name)
    assert list(types) == schema.names
    for field in schema:
        want = types[field.name]
        if pa.types.is_integer(field.type):
            assert want == pa.int64()
        elif pa.types.is_floating(field.type):
            assert want == pa.float64()
        elif pa.types.is_list(field.type):
            assert want.value_type in (pa.float64(), pa.int64(), pa.string())
        else:
            assert want == field.type  # strings, timestamps, booleans: read as written


def test_every_status_has_a_runs_and_health_column() -> None:
    assert tables.STATUSES == IMAGE_STATUSES and set(SCORED_STATUSES) <= set(IMAGE_STATUSES)
    for name in ("runs", "health"):
        assert {f"n_{s}" for s in IMAGE_STATUSES} <= set(tables.schema_of(name).names)
    for name in ("images", "faces"):
        assert set(tables.PROB_COLUMNS) <= set(tables.schema_of(name).names)


def test_dashboards_and_test_fixtures_derive_from_the_contract() -> None:
    from dashboards.tables import COLUMN_TYPES
    from tests import _dash_fixtures as fx

    for name in tables.SCHEMAS:
        assert COLUMN_TYPES[name] == tables.read_types(name)
    assert fx.IMAGES_SCHEMA.names == tables.images_schema().names
    assert fx.FACES_SCHEMA.names == tables.faces_schema().names
    assert fx.RUNS_SCHEMA == tables.runs_schema()


def test_image_rows_carry_every_contract_column_and_the_pipeline_numbers() -> None:
    probs = np.array([[0.05, 0.05, 0.1, 0.6, 0.1, 0.05, 0.05], [0.5, 0.1, 0.1, 0.05, 0.15, 0.05, 0.05]], np.float32)
    cfg = SentimentConfig()
    valence, labels = score_sentiment(probs, cfg)
    lm = np.arange(10, dtype=np.float32).reshape(5, 2)
    faces = [Face(box=(10, 20, 100, 100), score=0.99, landmarks=lm), Face(box=(200, 20, 50, 50), score=0.91)]
    result = ImageResult("ok", None, 640, 480, [
        FaceResult(f, p, EMOTIONS[int(np.argmax(p))], s, float(v)) for f, p, s, v in zip(faces, probs, labels, valence)])
    meta = {"image_id": "i1", "campaign_id": "c1", "posted_at": dt.datetime(2026, 1, 1, tzinfo=UTC),
            "platform": "x", "caption": "hi", "source": "s3://b/k.jpg"}
    now = dt.datetime(2026, 1, 2, tzinfo=UTC)
    image, face_rows = tables.image_rows(result, meta, model_version="m@1", detector_version="d@1", run_id="r",
                                         scored_at=now, sentiment=cfg)
    assert list(image) == tables.images_schema().names  # no extra column configured: exactly the contract
    assert [list(f) for f in face_rows] == [tables.faces_schema().names] * 2
    pa.Table.from_pylist([image], schema=tables.images_schema())  # the types fit the schema
    pa.Table.from_pylist(face_rows, schema=tables.faces_schema())
    assert image["n_faces"] == 2 and image["status"] == "ok" and image["width"] == 640
    area = np.array([100 * 100, 50 * 50], np.float64)
    mean = area @ probs / area.sum()
    assert [image[c] for c in tables.PROB_COLUMNS] == pytest.approx(mean.tolist(), abs=1e-6)
    assert image["dominant_emotion"] == EMOTIONS[int(np.argmax(mean))]
    assert face_rows[0]["landmarks"] == lm.reshape(-1).tolist() and face_rows[1]["landmarks"] is None  # NaN: unknown
    assert [f["emotion"] for f in face_rows] == ["happy", "angry"]
    assert [f["face_index"] for f in face_rows] == [0, 1]

    bad, none = tables.image_rows(ImageResult("fetch_error", "could not read"), meta, model_version="m@1",
                                  detector_version="d@1", run_id="r", scored_at=now)
    assert none == [] and bad["status"] == "fetch_error" and bad["n_faces"] == 0 and bad["valence"] is None


def _ts(day: int) -> dt.datetime:
    return dt.datetime(2026, 3, day, tzinfo=UTC)


def test_campaign_kpis_follow_the_documented_definitions() -> None:
    images = pa.table({
        "campaign_id": ["a", "a", "a", "a", "b", "a"],
        "status": ["ok", "no_face", "decode_error", "ok", "fetch_error", "ok"],
        "n_faces": pa.array([2, 0, 0, 1, 0, 3], pa.int32()),
        "posted_at": [_ts(1), _ts(4), None, _ts(2), _ts(9), _ts(20)],
        "model_version": ["v2", "v2", "v2", "v2", "v2", "v1"],  # the v1 row is older: not a's current model
        "scored_at": [_ts(10), _ts(10), _ts(10), _ts(11), _ts(10), _ts(5)],
    })
    p = {c: [0.1, 0.3, 0.2, 0.9] for c in tables.PROB_COLUMNS}
    faces = pa.table({"campaign_id": ["a", "a", "a", "a"], "emotion": ["happy", "sad", "happy", "angry"],
                      "sentiment": ["positive", "negative", "positive", "negative"],
                      "valence": [0.8, -0.4, 0.6, -0.9], "model_version": ["v2", "v2", "v2", "v1"], **p})
    images, faces = kpis.keep_latest_identity(images, faces)
    assert images.num_rows == 5 and faces.num_rows == 3
    rows = {r["campaign_id"]: r for r in kpis.campaign_kpis(images, faces).to_pylist()}
    a, b = rows["a"], rows["b"]
    assert (a["n_images"], a["n_images_ok"], a["n_images_with_faces"], a["n_faces"]) == (4, 3, 2, 3)
    assert a["share_happy"] == pytest.approx(2 / 3) and a["share_sad"] == pytest.approx(1 / 3) and a["share_angry"] == 0
    assert a["share_positive"] == pytest.approx(2 / 3) and a["net_sentiment"] == pytest.approx(1 / 3)
    assert a["mean_valence"] == pytest.approx((0.8 - 0.4 + 0.6) / 3)
    assert a["mean_p_happy"] == pytest.approx(0.2)
    assert (a["first_posted_at"], a["last_posted_at"]) == (_ts(1), _ts(4)) and a["model_version"] == "v2"
    assert (b["n_images"], b["n_images_ok"], b["n_faces"], b["share_happy"], b["net_sentiment"]) == (1, 0, 0, None, None)
    assert a["scoring_id"] == "v2~legacy"  # rows from before identities read their model's legacy identity
    assert kpis.campaign_kpis(images, faces).schema == kpis.kpi_schema()


def test_campaign_rows_are_per_identity_with_coverage_and_the_gone_images_of_the_current_one() -> None:
    """An upgrade half done: old scored i1..i4 (i4 from a dump that is gone), new has rescored i1, i2 and
    scored the new i5. One row per identity, never mixed; coverage against the campaign's 5 images."""
    ids = ["i1", "i2", "i3", "i4", "i1", "i2", "i5"]
    images = pa.table({
        "campaign_id": ["a"] * 7, "image_id": ids, "status": ["ok"] * 7, "n_faces": pa.array([1] * 7, pa.int32()),
        "posted_at": [_ts(d) for d in (1, 2, 3, 4, 1, 2, 5)], "model_version": ["m@1"] * 4 + ["m@2"] * 3,
        "scored_at": [_ts(10)] * 4 + [_ts(20)] * 3, "scoring_id": [None] * 4 + ["m@2/x"] * 3,
        "input_file": ["d1", "d1", "d2", "gone.parquet", "d1", "d1", "d3"],
    })
    emotions = ["happy", "happy", "sad", "sad", "happy", "sad", "sad"]
    faces = pa.table({
        "campaign_id": ["a"] * 7, "image_id": ids, "emotion": emotions,
        "sentiment": ["positive" if e == "happy" else "negative" for e in emotions], "valence": [0.5] * 7,
        "model_version": ["m@1"] * 4 + ["m@2"] * 3, "scoring_id": [None] * 4 + ["m@2/x"] * 3,
        "quality": ["good"] * 7, **{c: [0.1] * 7 for c in tables.PROB_COLUMNS}})
    rows = {r["scoring_id"]: r for r in kpis.campaign_kpis(images, faces, current="m@2/x",
                                                            gone_files={"gone.parquet"}).to_pylist()}
    old, new = rows["m@1~legacy"], rows["m@2/x"]
    assert (old["n_images"], old["n_images_all"], old["n_images_gone"], old["coverage"]) == (4, 5, None, 0.8)
    assert (new["n_images"], new["n_images_all"], new["n_images_gone"], new["coverage"]) == (3, 5, 1, 0.6)
    assert old["share_happy"] == 0.5 and new["share_happy"] == pytest.approx(1 / 3)  # never mixed
    assert old["n_faces_good"] == 4 and new["good_share_sad"] == pytest.approx(2 / 3)
    # i3 is still to rescore: the page shows the old identity, with the new one's coverage
    shown = kpis.shown_identities(list(rows.values()), "m@2/x")["a"]
    assert (shown["shown"], shown["complete"], shown["current_row"]["n_images"]) == ("m@1~legacy", False, 3)
    done = dict(new, n_images=4, coverage=0.8)  # once only the gone image is left, the current one is shown
    assert kpis.shown_identities([old, done], "m@2/x")["a"]["shown"] == "m@2/x"
    assert kpis.shown_identities([old], "m@2/x")["a"]["shown"] == "m@1~legacy"  # not yet touched by the new one
    assert kpis.shown_identities([new], "m@2/x")["a"] == {"shown": "m@2/x", "current": "m@2/x", "complete": False,
                                                          "current_row": new}


def test_a_video_track_counts_as_good_when_most_of_its_frames_are() -> None:
    faces = pa.table({
        "campaign_id": ["a"] * 4, "image_id": ["v"] * 3 + ["p"], "track_id": pa.array([0, 0, 0, None], pa.int32()),
        "emotion": ["happy"] * 4, "sentiment": ["positive"] * 4, "valence": [0.5] * 4, "model_version": ["m"] * 4,
        "scoring_id": ["s"] * 4, "quality": ["good", "blurred", "good", "small"],
        **{c: [0.4 if c == "p_happy" else 0.1] * 4 for c in tables.PROB_COLUMNS}})
    counted = kpis.counted_faces(faces)
    assert sorted(counted["quality"].to_pylist()) == ["good", "small"]
    images = pa.table({"campaign_id": ["a", "a"], "image_id": ["v", "p"], "status": ["ok", "ok"],
                       "n_faces": pa.array([1, 1], pa.int32()), "posted_at": [_ts(1), _ts(2)],
                       "model_version": ["m", "m"], "scored_at": [_ts(3), _ts(3)], "scoring_id": ["s", "s"]})
    (row,) = kpis.campaign_kpis(images, faces).to_pylist()
    assert (row["n_faces"], row["n_faces_good"], row["good_share_happy"]) == (2, 1, 1.0)


def test_the_dashboards_tiles_are_the_kpis(tmp_path) -> None:
    """The dashboards' KPI table carries fer_core.kpis' numbers (renamed for the tiles), not its own."""
    from dashboards import aggregate
    from dashboards.tables import Lake
    from tests._dash_fixtures import make_sample_lake

    sample = make_sample_lake(tmp_path)
    images, faces = aggregate.load_current(Lake(str(sample.root)))
    tiles = {r["campaign_id"]: r for r in aggregate.kpis(images, faces).to_pylist()}
    for r in kpis.campaign_kpis(images, faces).to_pylist():
        t = tiles[r["campaign_id"]]
        assert t["n_images"] == r["n_images"] and t["n_bad"] == r["n_images"] - r["n_images_ok"]
        assert t["n_with_faces"] == r["n_images_with_faces"] and t["n_faces"] == r["n_faces"]
        for tile, kpi in (("share_positive", "share_positive"), ("share_neutral", "share_neutral_sentiment"),
                          ("net_sentiment", "net_sentiment"), ("mean_valence", "mean_valence")):
            assert t[tile] == pytest.approx(r[kpi], nan_ok=True) if r[kpi] is not None else t[tile] is None


def _random_rows(rng: np.random.Generator, n_images: int, prefix: str, campaigns: tuple[str, ...]):
    """Images and faces rows of one identity: photos with 0-3 faces, videos with 1-2 tracks over 2-4 frames,
    problem images without faces, quality flags (some null), posted_at over a month."""
    from fer_core.quality import QUALITY_LABELS
    from fer_core.sentiment import SENTIMENTS

    img, fc = [], []
    for i in range(n_images):
        image_id, campaign = f"{prefix}{i}", campaigns[int(rng.integers(len(campaigns)))]
        status = str(rng.choice(["ok", "ok", "ok", "no_face", "decode_error", "fetch_error"]))
        video = status == "ok" and rng.random() < 0.25
        n_faces = 0 if status != "ok" else int(rng.integers(1, 3 if video else 4))
        img.append({"campaign_id": campaign, "image_id": image_id, "status": status, "n_faces": n_faces,
                    "posted_at": _ts(int(rng.integers(1, 29))), "model_version": "m@1", "scored_at": _ts(30),
                    "scoring_id": "s", "input_file": f"{prefix}.parquet"})
        for track in range(n_faces):
            for frame in range(int(rng.integers(2, 5)) if video else 1):
                p = rng.dirichlet(np.ones(7))
                fc.append({"campaign_id": campaign, "image_id": image_id, "track_id": track if video else None,
                           "frame_ms": frame * 1000 if video else None, "emotion": EMOTIONS[int(p.argmax())],
                           "sentiment": str(rng.choice(SENTIMENTS)), "valence": float(rng.uniform(-1, 1)),
                           "model_version": "m@1", "scoring_id": "s", "face_px": 80.0,
                           "quality": None if rng.random() < 0.1 else str(rng.choice(QUALITY_LABELS)),
                           **dict(zip(tables.PROB_COLUMNS, p.tolist()))})
    faces_types = pa.schema([pa.field("track_id", pa.int32()), pa.field("frame_ms", pa.int64())])
    faces = pa.Table.from_pylist(fc)
    for f in faces_types:
        faces = faces.set_column(faces.schema.get_field_index(f.name), f.name, faces[f.name].cast(f.type))
    return pa.Table.from_pylist(img), faces


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_adding_a_runs_rows_to_stored_campaign_rows_equals_the_recompute(seed) -> None:
    """kpis.add_kpis (what a run does between upgrades) gives what campaign_kpis over all rows gives: counts
    exactly, means to float rounding; with a new campaign in the run, one the run does not touch, and
    superseded fetch_error rows (the base counts them, the recompute no longer sees them)."""
    rng = np.random.default_rng(seed)
    old_images, old_faces = _random_rows(rng, 60, "old", ("a", "b", "c"))
    new_images, new_faces = _random_rows(rng, 25, "new", ("a", "b", "d"))
    # the run fetched again two of a's earlier fetch errors: their old rows are dropped, the new rows stay
    failed = [r for r in old_images.to_pylist() if r["status"] == "fetch_error" and r["campaign_id"] == "a"][:2]
    dropped = {r["image_id"] for r in failed}
    kept_old = old_images.filter(pa.array([i not in dropped for i in old_images["image_id"].to_pylist()]))
    new_images = pa.concat_tables([new_images, pa.Table.from_pylist(
        [dict(r, status="ok", n_faces=0, posted_at=r["posted_at"]) for r in failed], schema=new_images.schema)])
    base = kpis.campaign_kpis(old_images, old_faces, current="s").to_pylist()
    delta = kpis.campaign_kpis(new_images, new_faces, current="s")
    stored = [r for r in base if r["campaign_id"] in ("a", "b")]  # what the job adds to (d is new: no row)
    assert len(failed) == 2
    added = kpis.add_kpis(stored, delta, removed={"a": len(failed)})
    want = {r["campaign_id"]: r for r in kpis.campaign_kpis(pa.concat_tables([kept_old, new_images]),
                                                            pa.concat_tables([old_faces, new_faces]),
                                                            current="s").to_pylist()}
    assert added.schema == kpis.kpi_schema()
    got = {r["campaign_id"]: r for r in added.to_pylist()}
    assert sorted(got) == ["a", "b", "d"]
    for campaign, row in got.items():
        for column, value in row.items():
            expected = want[campaign][column]
            if isinstance(value, float) and expected is not None:
                assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), (campaign, column)
            else:
                assert value == expected, (campaign, column)
    assert all(kpis.addable_row(r) for r in base)
    with_faces = next(r for r in base if r["n_faces"])
    assert not kpis.addable_row(dict(with_faces, mean_p_happy=None))  # an older row: recomputed instead
