"""Re-renders into the same folder (dashboards.cache): gallery files kept by (image, scoring identity) and
their inputs, pages of campaigns a run did not touch left as they are, and the result always the same as a
from-scratch render of the same lake. Real Delta tables (tests/_dash_fixtures.py), real files."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

import _dash_fixtures as fx
from dashboards.cache import GALLERY_MANIFEST, PAGE_FINGERPRINTS
from dashboards.paths import campaign_page_name, gallery_asset_base, inside
from dashboards.render import render_dashboards

TOUCHED = fx.DEFAULT_CAMPAIGNS[0].campaign_id
RENDERED = re.compile(r"Rendered \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")


class CountingLoader:
    """The sample's image_bytes_loader, counting the images it was asked for."""

    def __init__(self, sample: fx.SampleLake) -> None:
        self.sample, self.calls = sample, []

    def __call__(self, image_id: str, source: str | None) -> bytes | None:
        self.calls.append(image_id)
        return self.sample.loader(image_id, source)


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def thumbs(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in (out / "thumbs").rglob("*.jpg")}


def pages(out: Path) -> dict[str, str]:
    """Every HTML page with its render time blanked (the one thing a from-scratch render changes)."""
    return {p.name: RENDERED.sub("Rendered <time>", p.read_text(encoding="utf-8")) for p in out.glob("*.html")}


def render(sample: fx.SampleLake, out: Path, **kw) -> CountingLoader:
    loader = CountingLoader(sample)
    render_dashboards(str(sample.root), str(out), gradcam=False, image_bytes_loader=loader, **kw)
    return loader


def append_run(sample: fx.SampleLake, tmp: Path, campaign_id: str, run_id: str = "run-20261129-touch",
               later: dt.datetime = dt.datetime(2026, 11, 29, 3, 0, tzinfo=fx.UTC)) -> None:
    """One more job run, at ``later``, that scored 6 new images (with faces, files on disk) of
    ``campaign_id`` only."""
    spec = fx.CampaignSpec(campaign_id, 6, fx._mood(happy=3.0), no_face=1, days=2)
    images, faces, _, _ = fx.build_tables((spec,), tmp / "new-images", seed=11, n_runs=1)
    images["image_id"] = [f"new-{run_id}-{i}" for i in images["image_id"]]
    faces["image_id"] = [f"new-{run_id}-{i}" for i in faces["image_id"]]
    images["run_id"] = [run_id] * len(images["image_id"])
    images["scored_at"] = [later + dt.timedelta(seconds=k) for k in range(len(images["image_id"]))]
    faces["run_id"] = [run_id] * len(faces["image_id"])
    for name, rows, schema in (("images", images, fx.IMAGES_SCHEMA), ("faces", faces, fx.FACES_SCHEMA)):
        parts = DeltaTable(str(sample.root / name)).metadata().partition_columns or None
        write_deltalake(str(sample.root / name), pa.Table.from_pydict(rows, schema=schema), mode="append",
                        partition_by=parts)
    run = {"run_id": run_id, "started_at": later, "finished_at": later, "status": "succeeded", "model_version": fx.MODEL,
           "detector_version": fx.DETECTOR, "scoring_id": fx.SCORING, "n_input": 6}
    write_deltalake(str(sample.root / "runs"), pa.Table.from_pylist([run], schema=fx.RUNS_SCHEMA), mode="append")


def partition_by_campaign(sample: fx.SampleLake) -> None:
    """Rewrite images and faces partitioned by campaign_id, as the job writes them: then a render can tell
    each campaign's files apart and reuse the aggregates of the campaigns whose files are unchanged."""
    for name in ("images", "faces"):
        table = DeltaTable(str(sample.root / name)).to_pyarrow_table()
        write_deltalake(str(sample.root / name), table, mode="overwrite", partition_by=["campaign_id"],
                        schema_mode="overwrite")


@pytest.fixture(params=["flat", "partitioned"])
def sample(tmp_path, request) -> fx.SampleLake:
    """The sample lake as a hand-written one (tables not partitioned: every render computes every
    campaign) and as the job writes it (partitioned by campaign_id: aggregates reused per campaign)."""
    lake = fx.make_sample_lake(tmp_path / "dash")
    if request.param == "partitioned":
        partition_by_campaign(lake)
    return lake


def aggregate_counts(caplog) -> tuple[int, int]:
    """(campaigns computed, reused) from the last render's log line."""
    found = re.findall(r"aggregates: (\d+) campaigns computed, (\d+) reused", caplog.text)
    return tuple(map(int, found[-1]))


def test_aggregates_of_untouched_campaigns_are_reused_and_equal_a_from_scratch_render(tmp_path, caplog):
    """As the job writes a lake: a second render reads no campaign's rows; after a run that touched one
    campaign only that campaign is computed; pages and CSV equal a from-scratch render's each time."""
    import logging

    caplog.set_level(logging.INFO, logger="dashboards")
    sample = fx.make_sample_lake(tmp_path / "dash")
    partition_by_campaign(sample)
    n_campaigns = len(DeltaTable(str(sample.root / "images")).to_pyarrow_table(columns=["campaign_id"])
                      .column("campaign_id").unique())
    out, scratch = tmp_path / "site", tmp_path / "scratch"
    render(sample, out)
    assert aggregate_counts(caplog) == (n_campaigns, 0)
    render(sample, out)
    assert aggregate_counts(caplog) == (0, n_campaigns)
    append_run(sample, tmp_path, TOUCHED)
    render(sample, out)
    assert aggregate_counts(caplog) == (1, n_campaigns - 1)
    render(sample, scratch, incremental=False)
    assert pages(out) == pages(scratch)
    assert (out / "campaigns.csv").read_bytes() == (scratch / "campaigns.csv").read_bytes()
    (out / ".aggregates" / "kpis.arrow").write_bytes(b"not arrow")  # a damaged cache: every campaign again
    render(sample, out)
    assert aggregate_counts(caplog) == (n_campaigns, 0) and pages(out) == pages(scratch)


def test_a_second_render_draws_no_gallery_image_and_rewrites_no_campaign_page(sample, tmp_path):
    out = tmp_path / "site"
    first = render(sample, out)
    assert len(first.calls) > 30  # every campaign with faces has gallery picks
    before, html = mtimes(out), pages(out)
    again = render(sample, out)
    assert again.calls == []
    after = mtimes(out)
    for name, mtime in before.items():
        if name.startswith("thumbs/") and name.endswith(".jpg") or name.startswith("campaign-"):
            assert after[name] == mtime, f"{name} was rewritten"
    assert after["index.html"] != before["index.html"]  # the index is always rewritten
    assert pages(out) == html and set(after) == set(before)


def test_a_run_touching_one_campaign_rewrites_only_its_page_and_equals_a_from_scratch_render(sample, tmp_path):
    out = tmp_path / "site"
    render(sample, out)
    before = mtimes(out)
    append_run(sample, tmp_path, TOUCHED)
    touched = render(sample, out)
    after = mtimes(out)
    rewritten = {n for n in after if n.startswith("campaign-") and after[n] != before.get(n)}
    assert rewritten == {campaign_page_name(TOUCHED)}
    assert touched.calls and all(i.startswith(("img-00-", "new-")) for i in touched.calls)  # its gallery only
    assert "run-20261129-touch" in (out / campaign_page_name(TOUCHED)).read_text(encoding="utf-8")
    assert "run-20261129-touch" in (out / "index.html").read_text(encoding="utf-8")

    scratch = tmp_path / "scratch"
    render(sample, scratch, incremental=False)
    assert pages(out) == pages(scratch)
    assert thumbs(out) == thumbs(scratch)
    for name in thumbs(out):
        assert (out / name).read_bytes() == (scratch / name).read_bytes(), name
    assert (out / "campaigns.csv").read_text() == (scratch / "campaigns.csv").read_text()


def test_a_new_scoring_identity_redraws_the_gallery_and_drops_the_old_files(sample, tmp_path):
    out = tmp_path / "site"
    render(sample, out)
    old = thumbs(out)
    rows = fx.build_tables(fx.DEFAULT_CAMPAIGNS, tmp_path / "again")  # the same rows, scored by another identity
    images = pa.Table.from_pydict(rows[0], schema=fx.IMAGES_SCHEMA)
    rescored = images.set_column(images.schema.get_field_index("scoring_id"), "scoring_id",
                                 pa.array(["fer-mini-xception@25.10.3/other"] * images.num_rows))
    rescored = rescored.set_column(rescored.schema.get_field_index("run_id"), "run_id",
                                   pa.array(["run-rescore"] * images.num_rows))
    write_deltalake(str(sample.root / "images"), rescored, mode="append")
    faces = pa.Table.from_pydict(rows[1], schema=fx.FACES_SCHEMA)
    faces = faces.set_column(faces.schema.get_field_index("scoring_id"), "scoring_id",
                             pa.array(["fer-mini-xception@25.10.3/other"] * faces.num_rows))
    write_deltalake(str(sample.root / "faces"), faces, mode="append")
    later = dt.datetime(2026, 11, 30, 3, 0, tzinfo=fx.UTC)
    run = {"run_id": "run-rescore", "started_at": later, "finished_at": later, "status": "succeeded",
           "model_version": fx.MODEL, "scoring_id": "fer-mini-xception@25.10.3/other"}
    write_deltalake(str(sample.root / "runs"), pa.Table.from_pylist([run], schema=fx.RUNS_SCHEMA), mode="append")

    again = render(sample, out)
    new = thumbs(out)
    assert len(again.calls) == len(new) > 0  # every pick drawn again, under its new identity's name
    assert not new & old and not any((out / name).exists() for name in old)
    picked = {n.rsplit("/", 1)[0] for n in new}
    assert picked <= {n.rsplit("/", 1)[0] for n in old}  # the same campaigns' folders


def test_a_blurred_render_redraws_every_file_an_unblurred_one_left(sample, tmp_path):
    out = tmp_path / "site"
    render(sample, out)
    before = mtimes(out)
    blurred = render(sample, out, blur_faces=True)
    after = mtimes(out)
    jpgs = [n for n in after if n.startswith("thumbs/") and n.endswith(".jpg")]
    assert len(blurred.calls) == len(jpgs) > 0
    assert all(after[n] != before.get(n) for n in jpgs)
    assert render(sample, out, blur_faces=True).calls == []  # and blurred files are reused by a blurred render


def test_a_malformed_or_forged_manifest_only_costs_a_redraw(sample, tmp_path):
    out = tmp_path / "site"
    render(sample, out)
    manifest = out / "thumbs" / GALLERY_MANIFEST
    data = json.loads(manifest.read_text())
    base, entry = next(iter(data["entries"].items()))
    data["entries"].update({base: {**entry, "overlays": 3},  # claims overlays that were never drawn
                            "../../../etc/passwd": entry, "thumbs/x/y": {"key": 1}})
    manifest.write_text(json.dumps(data))
    (out / PAGE_FINGERPRINTS).write_text("{not json")
    (out / "thumbs" / "stray.jpg").write_bytes(b"left by someone")
    again = render(sample, out)
    assert len(again.calls) == 1  # only the entry whose files are not all there
    assert not (out / "thumbs" / "stray.jpg").exists()
    kept = json.loads(manifest.read_text())["entries"]
    assert "../../../etc/passwd" not in kept and "thumbs/x/y" not in kept
    assert (out / campaign_page_name(TOUCHED)).is_file()


def test_gallery_file_names_of_hostile_ids_stay_in_their_folder():
    names = {gallery_asset_base(c, i, s) for c in fx.HOSTILE_IDS for i in fx.HOSTILE_IDS for s in (fx.SCORING, None, "")}
    assert len(names) == len(fx.HOSTILE_IDS) ** 2 * 2  # None and "" are the same identity, nothing else collides
    for name in names:
        assert re.fullmatch(r"thumbs/[a-z0-9-]+-[0-9a-f]{10}/[a-z0-9-]+-[0-9a-f]{16}", name), name
        inside(Path("/tmp/out"), name + ".jpg")  # raises if it resolves outside
    assert gallery_asset_base("c", "i", "a") != gallery_asset_base("c", "i", "b")


def test_a_from_scratch_render_makes_the_same_files_as_a_cached_one(sample, tmp_path):
    """The old way (everything drawn and written) and the new way give the same site."""
    out = tmp_path / "site"
    render(sample, out)
    render(sample, out)
    scratch = tmp_path / "scratch"
    render(sample, scratch, incremental=False)
    assert pages(out) == pages(scratch)
    assert sorted(p.name for p in out.glob("*.html")) == sorted(p.name for p in scratch.glob("*.html"))
    assert thumbs(out) == thumbs(scratch)


def test_a_fingerprint_ignores_float_noise_but_not_a_real_change():
    """pyarrow's threaded means differ in the last bits between renders of one lake (partitioned tables):
    that alone must not rewrite a page; a change in the sixth digit must."""
    from dashboards.cache import fingerprint
    from dashboards.thumbnails import GalleryImage

    page = {"y": [-0.29002607995690355, 0.1], "gi": GalleryImage("a", thumb="t.jpg"), "when": dt.date(2026, 1, 2)}
    noisy = {"y": [-0.2900260799569036, 0.1], "gi": GalleryImage("a", thumb="t.jpg"), "when": dt.date(2026, 1, 2)}
    assert fingerprint(page) == fingerprint(noisy)
    assert fingerprint(page) != fingerprint({**page, "y": [-0.290027, 0.1]})
    assert fingerprint(page) != fingerprint({**page, "gi": GalleryImage("a", thumb=None)})


def test_a_render_that_dies_midway_leaves_no_manifest_vouching_for_overwritten_files(sample, tmp_path, monkeypatch):
    """A blurred site, then an unblurred render that fails after drawing: the next blurred render must draw
    again rather than trust the old manifest for files that are now unblurred."""
    from dashboards import render as render_module

    out = tmp_path / "site"
    render(sample, out, blur_faces=True)

    def boom(*a, **kw):
        raise RuntimeError("killed after the gallery")

    monkeypatch.setattr(render_module.GalleryCache, "finish", lambda self, keep=(): boom())
    with pytest.raises(RuntimeError):
        render(sample, out, blur_faces=False)
    monkeypatch.undo()
    assert not (out / "thumbs" / GALLERY_MANIFEST).exists()
    again = render(sample, out, blur_faces=True)
    assert len(again.calls) == len(thumbs(out)) > 0


def test_cli_from_scratch_redraws_everything(sample, tmp_path):
    from dashboards.__main__ import main

    out = tmp_path / "site"
    assert main(["render", "--tables", str(sample.root), "--out", str(out), "--no-gradcam"]) == 0
    before = mtimes(out)
    assert main(["render", "--tables", str(sample.root), "--out", str(out), "--no-gradcam", "--from-scratch"]) == 0
    after = mtimes(out)
    assert all(after[n] != before.get(n) for n in after if n.startswith("campaign-") or n.endswith(".jpg"))


def test_tied_status_counts_come_in_the_same_order_whatever_the_row_order():
    """Ties (3 decode errors, 3 fetch errors) once came in the order the scan gave: the data-quality table of an
    unchanged campaign flipped between renders, and its page was rewritten for nothing."""
    from dashboards import aggregate

    rows = [("c", s, f"i{s}{k}") for s in ("fetch_error", "decode_error", "ok") for k in range(3)]
    orders = set()
    for shift in range(len(rows)):
        turned = rows[shift:] + rows[:shift]
        images = pa.table({"campaign_id": [r[0] for r in turned], "status": [r[1] for r in turned],
                           "image_id": [r[2] for r in turned], "error": [None] * len(turned)})
        counts, _ = aggregate.statuses(images)
        orders.add(tuple(counts["status"].to_pylist()))
    assert orders == {("decode_error", "fetch_error", "ok")}


def test_grad_cam_overlays_are_reused_and_a_failed_one_is_tried_again(sample, tmp_path, monkeypatch):
    import numpy as np

    from dashboards import explain

    calls: list[str] = []
    failing = {"on": True}

    def overlays(self, image_rgb, faces, model_version):
        calls.append(model_version)
        if failing["on"]:
            raise explain.ExplainError("Grad-CAM unavailable: boom")
        return [np.full((112, 112, 3), 128, np.uint8) for _ in faces], None

    monkeypatch.setattr(explain.Explainer, "overlays", overlays)
    out = tmp_path / "site"

    def site():
        loader = CountingLoader(sample)
        render_dashboards(str(sample.root), str(out), image_bytes_loader=loader, max_gallery=1)
        return loader, re.findall(r'<img class="cam" src="([^"]+)"', (out / campaign_page_name(TOUCHED)).read_text())

    first, cams = site()
    assert calls and not cams  # failed: thumbnails only, nothing cached for their overlays
    failing["on"] = False
    n_failed = len(calls)
    second, cams = site()
    assert len(second.calls) == len(first.calls) and len(calls) > n_failed and cams  # tried again, drawn
    made = {c: (out / c).stat().st_mtime_ns for c in cams}
    n_drawn = len(calls)
    third, again = site()
    assert third.calls == [] and len(calls) == n_drawn  # neither the image nor Grad-CAM again
    assert again == cams and {c: (out / c).stat().st_mtime_ns for c in cams} == made


def added_count(caplog) -> int:
    """Campaigns of the last render computed by adding a run's rows to the last render's aggregates."""
    found = re.findall(r"\((\d+) computed from a run's rows added to the last render's\)", caplog.text)
    return int(found[-1])


FLOAT = re.compile(r"-?\d+\.\d{6,}(?:e-?\d+)?")


def same_figures(html: dict[str, str]) -> dict[str, str]:
    """Pages with long float literals (sort keys, chart data) to 10 significant digits: sums of the same
    numbers in another order differ in the last bits, and nothing shown differs."""
    return {name: FLOAT.sub(lambda m: f"{float(m.group()):.10g}", text) for name, text in html.items()}


def assert_same_aggregates(a, b) -> None:
    """Every aggregate table equal, row for row, floats to 1e-9 (sums in another order round differently)."""
    import math

    from dashboards.aggregate import AGGREGATE_TABLES

    for name in AGGREGATE_TABLES:
        left, right = getattr(a, name), getattr(b, name)
        assert left.column_names == right.column_names, name
        assert left.num_rows == right.num_rows, name
        for i, (x, y) in enumerate(zip(left.to_pylist(), right.to_pylist())):
            for column in x:
                u, v = x[column], y[column]
                if isinstance(u, float) and isinstance(v, float):
                    assert math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(u) and math.isnan(v)), \
                        (name, i, column, u, v)
                else:
                    assert u == v, (name, i, column, u, v)


def test_a_run_adding_to_one_campaign_reads_only_its_new_rows_and_equals_a_from_scratch_computation(tmp_path, caplog):
    """Issue 29: after a run that added rows to a campaign (its files only grew), its aggregates are the
    last render's plus those of the new rows; after two such runs in a row, every aggregate table equals
    one computed from all the rows, and the pages a from-scratch render's."""
    import logging

    from dashboards import aggregate
    from dashboards.tables import Lake

    caplog.set_level(logging.INFO, logger="dashboards")
    sample = fx.make_sample_lake(tmp_path / "dash")
    partition_by_campaign(sample)
    out = tmp_path / "site"
    render(sample, out)
    for k, run_id in enumerate(("run-20261129-touch", "run-20261130-touch")):
        append_run(sample, tmp_path / f"run{k}", TOUCHED, run_id=run_id,
                   later=dt.datetime(2026, 11, 29 + k, 3, 0, tzinfo=fx.UTC))
        render(sample, out)
        assert added_count(caplog) == 1 and aggregate_counts(caplog)[0] == 1
        lake = Lake(str(sample.root))
        assert_same_aggregates(aggregate.compute(lake, max_gallery=8), _last_aggregates(out))
    scratch = tmp_path / "scratch"
    render(sample, scratch, incremental=False)
    assert same_figures(pages(out)) == same_figures(pages(scratch))
    assert (out / "campaigns.csv").read_bytes() == (scratch / "campaigns.csv").read_bytes()
    assert "run-20261130-touch" in (out / campaign_page_name(TOUCHED)).read_text(encoding="utf-8")


def test_a_run_that_rewrote_a_campaigns_files_computes_it_from_all_its_rows(tmp_path, caplog):
    """A delete (an erasure, a superseded fetch error) rewrites files: the campaign's rows are no longer
    the last render's plus new ones, so it is computed whole, and still equals a from-scratch render."""
    import logging

    caplog.set_level(logging.INFO, logger="dashboards")
    sample = fx.make_sample_lake(tmp_path / "dash")
    partition_by_campaign(sample)
    out = tmp_path / "site"
    render(sample, out)
    append_run(sample, tmp_path / "run", TOUCHED)
    images = DeltaTable(str(sample.root / "images"))
    victim = next(r["image_id"] for r in images.to_pyarrow_table(columns=["image_id", "campaign_id"]).to_pylist()
                  if r["campaign_id"] == TOUCHED and not r["image_id"].startswith("new-"))
    images.delete(f"image_id = '{victim}'")
    DeltaTable(str(sample.root / "faces")).delete(f"image_id = '{victim}'")
    render(sample, out)
    assert added_count(caplog) == 0 and aggregate_counts(caplog)[0] == 1
    scratch = tmp_path / "scratch"
    render(sample, scratch, incremental=False)
    assert pages(out) == pages(scratch)
    assert victim not in (out / campaign_page_name(TOUCHED)).read_text(encoding="utf-8")


def _last_aggregates(out: Path):
    """The aggregates the last render stored (dashboards.cache.AggregateCache), as Aggregates."""
    import pyarrow.ipc as ipc

    from dashboards.aggregate import AGGREGATE_TABLES, Aggregates

    tables = {}
    for name in AGGREGATE_TABLES:
        with pa.memory_map(str(out / ".aggregates" / f"{name}.arrow")) as source:
            tables[name] = ipc.open_file(source).read_all()
    return Aggregates(**tables)
