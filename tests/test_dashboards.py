"""Dashboards rendered from real Delta tables (tests/_dash_fixtures.py): numbers, files, safety, empty states.

Browser checks (console errors, drawn charts, XSS in a real DOM) live in test_dashboards_browser.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import _dash_fixtures as fx
from dashboards import aggregate, figures
from dashboards.__main__ import main as cli_main
from dashboards.paths import campaign_page_name, inside, safe_name
from dashboards.render import render_dashboards
from dashboards.tables import DashboardError, Lake


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> fx.SampleLake:
    return fx.make_sample_lake(tmp_path_factory.mktemp("dash"))


@pytest.fixture(scope="module")
def site(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    index = render_dashboards(str(sample.root), str(out), gradcam=False, image_bytes_loader=sample.loader)
    assert index == out / "index.html"
    return out


def page(site: Path, campaign_id: str) -> str:
    return (site / campaign_page_name(campaign_id)).read_text(encoding="utf-8")


def raw_rows(sample: fx.SampleLake) -> tuple[list[dict], list[dict]]:
    from deltalake import DeltaTable

    images = DeltaTable(str(sample.root / "images")).to_pyarrow_table().to_pylist()
    faces = DeltaTable(str(sample.root / "faces")).to_pyarrow_table().to_pylist()
    return images, faces


# ----------------------------------------------------------------------------- files and offline


def test_one_page_per_campaign_and_one_plotly(site, sample):
    pages = sorted(p.name for p in site.glob("campaign-*.html"))
    assert pages == sorted(campaign_page_name(c) for c in sample.campaigns)
    assert sorted(p.name for p in site.rglob("plotly*.js")) == ["plotly.min.js"]
    assert (site / "plotly.min.js").stat().st_size > 1_000_000
    index = (site / "index.html").read_text(encoding="utf-8")
    for cid in sample.campaigns:
        assert f'href="{campaign_page_name(cid)}"' in index


@pytest.mark.parametrize("name", ["index.html", campaign_page_name("spring-sale-2026")])
def test_pages_are_offline_and_have_no_inline_script(site, name):
    html = (site / name).read_text(encoding="utf-8")
    assert '<script src="plotly.min.js" defer></script>' in html
    assert not re.search(r"https?://", html), "pages must not reference the network"
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S):
        assert 'src="' in attrs or 'type="application/json"' in attrs, f"inline script: {attrs} {body[:80]}"
    for block in re.findall(r'<script type="application/json" data-chart="[^"]+">(.*?)</script>', html, flags=re.S):
        spec = json.loads(block)
        assert spec["data"] and "layout" in spec


# ----------------------------------------------------------------------------- numbers


def test_kpis_match_a_hand_count(sample):
    images, faces = raw_rows(sample)
    cid = "spring-sale-2026"
    imgs = [r for r in images if r["campaign_id"] == cid]
    fcs = [r for r in faces if r["campaign_id"] == cid]
    lake = Lake(str(sample.root))
    table = aggregate.compute(lake, max_gallery=4).kpis
    row = next(r for r in table.to_pylist() if r["campaign_id"] == cid)
    assert row["n_images"] == len(imgs)
    assert row["n_faces"] == len(fcs)
    assert row["n_with_faces"] == sum(1 for r in imgs if (r["n_faces"] or 0) > 0)
    assert row["n_bad"] == sum(1 for r in imgs if r["status"] not in ("ok", "no_face"))
    pos = sum(r["sentiment"] == "positive" for r in fcs) / len(fcs)
    neg = sum(r["sentiment"] == "negative" for r in fcs) / len(fcs)
    assert row["share_positive"] == pytest.approx(pos)
    assert row["net_sentiment"] == pytest.approx(pos - neg)
    assert row["mean_valence"] == pytest.approx(np.mean([r["valence"] for r in fcs]), abs=1e-6)
    # baseline = the campaign before its latest run
    latest = max(imgs, key=lambda r: r["scored_at"])["run_id"]
    assert row["baseline_mode"] == "run" and row["latest_run"] == latest
    before = [r for r in fcs if r["run_id"] != latest]
    assert row["n_images_base"] == sum(1 for r in imgs if r["run_id"] != latest)
    assert row["n_faces_base"] == len(before)
    assert row["mean_valence_base"] == pytest.approx(np.mean([r["valence"] for r in before]), abs=1e-6)


def test_change_p_values_match_scipy_and_the_raw_faces(sample):
    """*_change_p compares the new slice with the baseline from aggregates alone; recompute it from
    the raw rows: shares against SciPy's chi-square (no continuity correction), net sentiment and
    valence against a pooled z-test on the faces themselves."""
    from math import erfc, sqrt

    stats = pytest.importorskip("scipy.stats")
    images, faces = aggregate.load_current(Lake(str(sample.root)))
    rows = {r["campaign_id"]: r for r in aggregate.kpis(images, faces).to_pylist()}
    cid = "spring-sale-2026"  # two runs: the baseline is the first run's rows
    f = faces.filter(pa.compute.equal(faces["campaign_id"], cid)).to_pydict()
    base = np.array(f["in_baseline"], bool)
    assert 0 < base.sum() < len(base)
    for s in ("positive", "neutral", "negative"):
        hit = np.array(f["sentiment"]) == s
        table = [[(hit & ~base).sum(), (~hit & ~base).sum()], [(hit & base).sum(), (~hit & base).sum()]]
        _, p_ref, _, _ = stats.chi2_contingency(table, correction=False)
        assert rows[cid][f"share_{s}_change_p"] == pytest.approx(p_ref, rel=1e-6), s
    score = {"positive": 1.0, "neutral": 0.0, "negative": -1.0}
    for field, values in (("net_sentiment", np.array([score[s] for s in f["sentiment"]])),
                          ("mean_valence", np.array(f["valence"], np.float64))):
        se = sqrt(values.var() * (1 / (~base).sum() + 1 / base.sum()))
        p_ref = erfc(abs(values[~base].mean() - values[base].mean()) / se / sqrt(2))
        assert rows[cid][f"{field}_change_p"] == pytest.approx(p_ref, rel=1e-6), field
    img = images.filter(pa.compute.equal(images["campaign_id"], cid)).to_pydict()
    ibase, with_faces = np.array(img["in_baseline"], bool), np.array(img["n_faces"]) > 0
    table = [[(with_faces & ~ibase).sum(), (~with_faces & ~ibase).sum()],
             [(with_faces & ibase).sum(), (~with_faces & ibase).sum()]]
    assert rows[cid]["share_with_faces_change_p"] == pytest.approx(stats.chi2_contingency(table, correction=False)[1],
                                                                   rel=1e-6)


def test_kpi_intervals_match_scipy_and_the_raw_faces(site, sample):
    from math import sqrt

    stats = pytest.importorskip("scipy.stats")
    images, faces = aggregate.load_current(Lake(str(sample.root)))
    rows = {r["campaign_id"]: r for r in aggregate.kpis(images, faces).to_pylist()}
    cid = "spring-sale-2026"
    r = rows[cid]
    assert 0 < r["n_positive"] < r["n_faces"]
    ci = stats.binomtest(r["n_positive"], r["n_faces"]).proportion_ci(method="wilson")
    assert (r["share_positive_ci_low"], r["share_positive_ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-6)
    valence = np.array(faces.filter(pa.compute.equal(faces["campaign_id"], cid))["valence"].to_pylist())
    half = 1.959964 * sqrt(valence.var() / len(valence))
    assert r["mean_valence_ci_low"] == pytest.approx(valence.mean() - half, abs=1e-9)
    assert r["mean_valence_ci_high"] == pytest.approx(valence.mean() + half, abs=1e-9)
    html = page(site, cid)
    assert f"95%: {100 * ci.low:.1f}–{100 * ci.high:.1f}%" in html
    assert rows["no-faces-campaign"]["share_positive_ci_low"] is None  # no faces, no interval


def test_only_changes_beyond_noise_are_coloured(tmp_path):
    """The latest run turns every face negative: that change is coloured; the untouched campaign's
    small changes are muted and marked ~, and every tile agrees with its p-value."""
    specs = fx.DEFAULT_CAMPAIGNS[:1]
    images, faces, _, runs = fx.build_tables(specs, tmp_path / "images", n_runs=2)
    for i, run in enumerate(faces["run_id"]):
        if run == runs[-1]:
            faces["sentiment"][i], faces["valence"][i] = "negative", -0.8
    fx.write_lake(tmp_path / "lake", images, faces, runs)
    out = tmp_path / "site"
    render_dashboards(str(tmp_path / "lake"), str(out), gradcam=False)
    html = page(out, specs[0].campaign_id)
    tiles = dict(re.findall(r'<div class="tile-label">([^<]+)</div>.*?<span class="delta ([^"]+)"', html, flags=re.S))
    assert "tone-bad" in tiles["Negative"] and "noise" not in tiles["Negative"]
    assert "tone-bad" in tiles["Net sentiment"] and "tone-bad" in tiles["Mean valence"]
    assert "tone-bad" in tiles["Positive"]  # positive share fell
    index = (out / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<span class="delta down tone-bad"', index)


def test_noise_marks_agree_with_the_p_values(site, sample):
    rows = {r["campaign_id"]: r for r in aggregate.compute(Lake(str(sample.root)), max_gallery=1).kpis.to_pylist()}
    labels = {"Positive": "share_positive", "Neutral": "share_neutral", "Negative": "share_negative",
              "Net sentiment": "net_sentiment", "Mean valence": "mean_valence", "With faces": "share_with_faces"}
    checked = muted = 0
    for cid, row in rows.items():
        html = page(site, cid)
        for label, cls in re.findall(r'<div class="tile-label">([^<]+)</div>.*?<span class="delta ([^"]+)"', html,
                                     flags=re.S):
            if label not in labels or " flat " in f" {cls} " or cls == "none":
                continue
            p = row[f"{labels[label]}_change_p"]
            assert ("noise" in cls.split()) == (p is None or p >= 0.05), (cid, label, cls, p)
            checked += 1
            muted += "noise" in cls.split()
    assert checked >= 5 and muted >= 1  # the fixture's runs share one mood: some changes are noise


def test_baseline_falls_back_to_posted_week_then_to_none(sample):
    rows = {r["campaign_id"]: r for r in aggregate.compute(Lake(str(sample.root)), max_gallery=1).kpis.to_pylist()}
    assert rows["winter-clearance"]["baseline_mode"] == "week"  # one run, three posted weeks
    assert rows["broken-uploads"]["baseline_mode"] == "none"  # one run, one week
    assert rows["broken-uploads"]["n_images_base"] is None


def test_timeline_and_platform_counts_add_up(sample):
    agg = aggregate.compute(Lake(str(sample.root)), max_gallery=1)
    kpi = {r["campaign_id"]: r for r in agg.kpis.to_pylist()}
    for cid, part in aggregate.split_by_campaign(agg.timeline).items():
        rows = part.to_pylist()
        assert sum(r["n_faces"] for r in rows) == kpi[cid]["n_faces"]
        assert sum(r["n_images"] for r in rows) == kpi[cid]["n_images"] - kpi[cid]["n_undated"]
        assert all(r["n_faces"] == r["n_positive"] + r["n_neutral"] + r["n_negative"] for r in rows)
    for cid, part in aggregate.split_by_campaign(agg.platforms).items():
        assert sum(r["n_images"] for r in part.to_pylist()) == kpi[cid]["n_images"]


def test_gallery_ranks_by_valence_without_repeats(sample):
    agg = aggregate.compute(Lake(str(sample.root)), max_gallery=3)
    picks = aggregate.split_by_campaign(agg.gallery)["spring-sale-2026"].to_pylist()
    pos = [r["valence"] for r in picks if r["side"] == "positive"]
    neg = [r["valence"] for r in picks if r["side"] == "negative"]
    assert len(pos) == 3 and len(neg) == 3 and pos == sorted(pos, reverse=True) and neg == sorted(neg)
    assert min(pos) >= max(neg)
    assert len({r["image_id"] for r in picks}) == 6
    # a small campaign (6 images with faces, k=8) splits into halves instead of one full side
    small = aggregate.split_by_campaign(aggregate.compute(Lake(str(sample.root)), max_gallery=8).gallery)[fx.XSS_ID]
    sides = [r["side"] for r in small.to_pylist()]
    assert sides.count("positive") == 3 and sides.count("negative") == 3


def test_pages_of_campaigns_gone_from_the_tables_are_removed(tmp_path):
    """A campaign deleted from the lake (e.g. erased on request) must not live on as a page."""
    out = tmp_path / "site"
    two = fx.make_sample_lake(tmp_path / "two", specs=fx.DEFAULT_CAMPAIGNS[:2], n_runs=1)
    render_dashboards(str(two.root), str(out), gradcam=False, image_bytes_loader=two.loader)
    kept, gone = (campaign_page_name(c) for c in two.campaigns)
    assert (out / kept).is_file() and (out / gone).is_file()
    (out / "campaign-notes.html").write_text("a user's own file")  # not a name the renderer makes
    one = fx.make_sample_lake(tmp_path / "one", specs=fx.DEFAULT_CAMPAIGNS[:1], n_runs=1)
    render_dashboards(str(one.root), str(out), gradcam=False, image_bytes_loader=one.loader)
    assert (out / kept).is_file() and not (out / gone).exists()
    assert (out / "campaign-notes.html").read_text() == "a user's own file"
    assert gone not in (out / "index.html").read_text(encoding="utf-8")


def _rescore(tmp_path, images: dict, faces: dict, *, identity: str, model: str, share: float = 1.0,
             sentiment: str = "negative") -> None:
    """Append a rescoring of the first ``share`` of the images by another identity, and its runs row
    (which makes it the lake's current identity)."""
    import datetime as dt

    from deltalake import write_deltalake

    newer = pa.Table.from_pydict(images, schema=fx.IMAGES_SCHEMA)
    newer = newer.slice(0, int(round(newer.num_rows * share)))
    later = pa.array([v.replace(day=28) for v in newer["scored_at"].to_pylist()], fx.TS)
    for column, values in (("model_version", pa.array([model] * newer.num_rows)),
                           ("scoring_id", pa.array([identity] * newer.num_rows)), ("scored_at", later),
                           ("run_id", pa.array(["run-rescore"] * newer.num_rows))):
        newer = newer.set_column(newer.schema.get_field_index(column), column, values)
    write_deltalake(str(tmp_path / "lake" / "images"), newer, mode="append")
    new_faces = pa.Table.from_pydict(faces, schema=fx.FACES_SCHEMA)
    new_faces = new_faces.filter(pa.compute.is_in(new_faces["image_id"], newer["image_id"]))
    for column, value in (("model_version", model), ("scoring_id", identity), ("sentiment", sentiment),
                          ("run_id", "run-rescore")):
        new_faces = new_faces.set_column(new_faces.schema.get_field_index(column), column,
                                         pa.array([value] * new_faces.num_rows))
    write_deltalake(str(tmp_path / "lake" / "faces"), new_faces, mode="append")
    start = dt.datetime(2026, 11, 28, 3, 0, tzinfo=fx.UTC)
    run = {"run_id": "run-rescore", "started_at": start, "finished_at": start, "status": "succeeded",
           "model_version": model, "scoring_id": identity}
    write_deltalake(str(tmp_path / "lake" / "runs"), pa.Table.from_pylist([run], schema=fx.RUNS_SCHEMA), mode="append")


def test_rescored_campaign_shows_only_the_current_scoring(tmp_path):
    """Rows of an older scoring identity must not double the counts: once the current identity (the
    latest run's) has rescored every image, the page counts its rows only."""
    specs = fx.DEFAULT_CAMPAIGNS[:1]
    images, faces, _, runs = fx.build_tables(specs, tmp_path / "images", n_runs=1)
    fx.write_lake(tmp_path / "lake", images, faces, runs)
    _rescore(tmp_path, images, faces, identity="fer-next@2.0/retinaface@0.9,1024px,min20/00000000", model="fer-next@2.0")
    agg = aggregate.compute(Lake(str(tmp_path / "lake")), max_gallery=1)
    row = agg.kpis.to_pylist()[0]
    assert row["n_images"] == len(images["image_id"])
    assert row["n_faces"] == len(faces["image_id"])
    assert row["share_negative"] == pytest.approx(1.0)  # the newer model's rows, not the old ones
    (scoring,) = agg.scoring.to_pylist()
    assert scoring["shown"] == scoring["current"] and scoring["complete"]
    (cmp,) = agg.identity_comparison.to_pylist()  # both scored every image: compared on all it could read
    n_read = sum(s in ("ok", "no_face") for s in images["status"])
    assert cmp["n_common"] == n_read and cmp["new_share_negative"] == pytest.approx(1.0)
    assert cmp["old"] == fx.SCORING and cmp["old_share_negative"] < 1.0


def test_a_half_rescored_campaign_shows_the_older_scoring_marked_with_the_new_ones_coverage(tmp_path):
    """During a backfill the page keeps the older identity's figures (a complete picture), says so, and
    compares the two on the images both scored; no figure mixes them."""
    specs = fx.DEFAULT_CAMPAIGNS[:1]
    images, faces, _, runs = fx.build_tables(specs, tmp_path / "images", n_runs=1)
    fx.write_lake(tmp_path / "lake", images, faces, runs)
    new_id = "fer-next@2.0+tta/retinaface@0.5,1024px,min20/12345678"
    _rescore(tmp_path, images, faces, identity=new_id, model="fer-next@2.0", share=0.5)
    agg = aggregate.compute(Lake(str(tmp_path / "lake")), max_gallery=1)
    row = agg.kpis.to_pylist()[0]
    assert row["n_images"] == len(images["image_id"]) and row["share_negative"] < 1.0  # the old rows only
    (scoring,) = agg.scoring.to_pylist()
    n_half = int(round(len(images["image_id"]) * 0.5))
    assert (scoring["shown"], scoring["current"], scoring["complete"]) == (fx.SCORING, new_id, False)
    assert (scoring["current_n_images"], scoring["n_images_all"]) == (n_half, len(images["image_id"]))
    (cmp,) = agg.identity_comparison.to_pylist()
    assert cmp["n_common"] == sum(s in ("ok", "no_face") for s in images["status"][:n_half])
    assert cmp["new_share_negative"] == pytest.approx(1.0)
    out = tmp_path / "out"
    render_dashboards(str(tmp_path / "lake"), str(out), gradcam=False)
    page = next(out.glob("campaign-*.html")).read_text(encoding="utf-8")
    assert f"Figures by an older scoring, {fx.SCORING}, not the current one" in page
    assert f"{new_id} has rescored {n_half:,} of this campaign&#39;s {len(images['image_id']):,} images" in page
    assert "Older and current scoring compared" in page and "+" in page


def _chart_json(html: str, chart: str) -> dict:
    block = re.search(rf'<script type="application/json" data-chart="{chart}">(.*?)</script>', html, flags=re.S)
    return json.loads(block.group(1))


def test_adjusted_mix_comes_from_the_campaigns_table_for_the_shown_model(tmp_path):
    """The emotion chart adds the campaigns table's confusion-adjusted mix only when that row was
    computed with the model version the page shows; the fixture's own campaigns table (no such
    columns, like a lake from before them) gives no third trace."""
    from deltalake import write_deltalake

    from dashboards.tables import ADJUSTED_COLUMNS

    specs = fx.DEFAULT_CAMPAIGNS[:2]
    lake = fx.make_sample_lake(tmp_path / "a", specs=specs, n_runs=1)
    before = render_dashboards(str(lake.root), str(tmp_path / "before"), gradcam=False, image_bytes_loader=lake.loader)
    fig = _chart_json(page(before.parent, specs[0].campaign_id), "chart-emotions")
    assert len(fig["data"]) == 2 and not fig["layout"]["showlegend"]

    mix = [0.05, 0.0, 0.05, 0.5, 0.1, 0.1, 0.2]
    rows = [{"campaign_id": specs[0].campaign_id, "model_version": fx.MODEL, "scoring_id": fx.SCORING,
             **dict(zip(ADJUSTED_COLUMNS, mix))},
            {"campaign_id": specs[1].campaign_id, "model_version": "fer-older@1",
             "scoring_id": "fer-older@1/retinaface@0.9,1024px,min20/0ld0ld00", **dict(zip(ADJUSTED_COLUMNS, mix))}]
    write_deltalake(str(lake.root / "campaigns"), pa.Table.from_pylist(rows), mode="overwrite", schema_mode="overwrite")
    after = render_dashboards(str(lake.root), str(tmp_path / "after"), gradcam=False, image_bytes_loader=lake.loader)
    html = page(after.parent, specs[0].campaign_id)
    fig = _chart_json(html, "chart-emotions")
    assert len(fig["data"]) == 3 and fig["layout"]["showlegend"]
    assert fig["data"][2]["y"] == [round(100 * v, 2) for v in mix]
    assert "corrected for the model" in html
    other = _chart_json(page(after.parent, specs[1].campaign_id), "chart-emotions")
    assert len(other["data"]) == 2  # that row describes another model's scores


def test_only_needed_columns_are_read(sample, tmp_path, monkeypatch):
    """Captions and sources (the bulky columns) are read only for gallery images, through a filter."""
    calls: list[tuple[str, list[str], object]] = []
    original = Lake.read

    def spy(self, name, columns, filter=None, **kw):
        calls.append((name, list(columns), filter))
        return original(self, name, columns, filter, **kw)

    monkeypatch.setattr(Lake, "read", spy)
    render_dashboards(str(sample.root), str(tmp_path / "out"), gradcam=False, max_gallery=2)
    for name, columns, filt in calls:
        assert "landmarks" not in columns or filt is not None
        if "caption" in columns or "source" in columns:
            assert filt is not None, f"{name} read {columns} without a filter"
    assert {c[0] for c in calls} <= {"images", "faces", "runs", "campaigns", "health"}


# ----------------------------------------------------------------------------- pages


def test_campaign_page_contents(site, sample):
    html = page(site, "spring-sale-2026")
    for text in ("Emotion mix", "Sentiment and valence over time", "By platform", "Faces per image",
                 "Detection confidence", "Most positive images", "Most negative images", "Data quality",
                 "Run and model lineage", "not a person", "vs. before latest run", sample.run_ids[-1],
                 fx.MODEL, fx.DETECTOR, "could not decode", "JPEG image is truncated"):
        assert text in html, text
    assert html.count('class="tile"') == 8
    thumbs = re.findall(r'<img class="thumb" src="([^"]+)"', html)
    assert len(thumbs) == 16
    for src in thumbs:
        assert (site / src).is_file() and (site / src).stat().st_size < 60_000
        assert Image.open(site / src).size[0] <= 360


def test_no_face_campaign_says_so(site):
    html = page(site, "no-faces-campaign")
    assert "No faces were found in this campaign&#39;s 6 scored images" in html
    assert re.findall(r'<div class="chart" id="([^"]+)"', html) == ["chart-faces_per_image"]
    assert "Most positive images" not in html  # no empty galleries, the banner says why


def test_only_bad_images_campaign_says_so(site):
    html = page(site, "broken-uploads")
    assert "None of this campaign&#39;s 5 images could be scored" in html
    assert '<div class="chart"' not in html
    for label in ("could not decode", "could not fetch", "empty file"):
        assert label in html
    assert "NoSuchKey" in html


def test_inline_bytes_use_the_job_loader(sample, site, tmp_path):
    html = page(site, "winter-clearance")
    assert len(re.findall(r'<img class="thumb"', html)) > 0  # site was rendered with sample.loader
    render_dashboards(str(sample.root), str(tmp_path / "plain"), gradcam=False, max_gallery=1)
    plain = (tmp_path / "plain" / campaign_page_name("winter-clearance")).read_text(encoding="utf-8")
    assert '<img class="thumb"' not in plain
    assert "pass image_bytes_loader" in plain


def test_blur_faces_hides_face_pixels(sample, site, tmp_path):
    render_dashboards(str(sample.root), str(tmp_path / "blur"), gradcam=False, blur_faces=True)
    name = re.findall(r'<img class="thumb" src="([^"]+)"', page(site, "spring-sale-2026"))[0]
    sharp = np.asarray(Image.open(site / name).convert("L"), np.float32)
    blurred = np.asarray(Image.open(tmp_path / "blur" / name).convert("L"), np.float32)
    # detail (gradient energy) inside the drawn faces drops a lot; the files differ
    def detail(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())
    assert detail(blurred) < 0.8 * detail(sharp)
    assert "faces are blurred on this page" in (tmp_path / "blur" / "index.html").read_text(encoding="utf-8")


def test_gradcam_goes_through_one_adapter(sample, tmp_path, monkeypatch):
    """Overlays come from dashboards.explain; when it fails the page says so and keeps the thumbnail."""
    from dashboards import explain

    calls = []

    def fake(self, image_rgb, faces, model_version):
        calls.append(model_version)
        return [np.full((112, 112, 3), 128, np.uint8) for _ in faces], None

    monkeypatch.setattr(explain.Explainer, "overlays", fake)
    render_dashboards(str(sample.root), str(tmp_path / "ok"), max_gallery=1)
    html = (tmp_path / "ok" / campaign_page_name("spring-sale-2026")).read_text(encoding="utf-8")
    cams = re.findall(r'<img class="cam" src="([^"]+)"', html)
    assert cams and all((tmp_path / "ok" / c).is_file() for c in cams)
    assert set(calls) == {fx.MODEL}

    def broken(self, model_version):
        raise explain.ExplainError("Grad-CAM unavailable: model 'fer-mini-xception' could not be loaded (boom)")

    monkeypatch.undo()
    monkeypatch.setattr(explain.Explainer, "_model", broken)
    render_dashboards(str(sample.root), str(tmp_path / "bad"), max_gallery=1)
    html = (tmp_path / "bad" / campaign_page_name("spring-sale-2026")).read_text(encoding="utf-8")
    assert '<img class="thumb"' in html and '<img class="cam"' not in html
    assert "could not be loaded (boom). The thumbnail is shown without overlays." in html


# ----------------------------------------------------------------------------- safety


def test_figure_json_cannot_close_its_script():
    fig = {"data": [{"type": "bar", "x": ["</script><script>alert(1)</script>", "a&b", "\u2028"], "y": [1, 2, 3]}],
           "layout": {}}
    text = figures.to_json(fig)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["data"] == fig["data"]
    nan = figures.to_json({"data": [{"type": "bar", "x": ["a"], "y": [float("nan")]}], "layout": {}})
    assert json.loads(nan)["data"][0]["y"] == [None]


def test_untrusted_text_is_escaped_in_html(site):
    html = page(site, fx.XSS_ID)
    index = (site / "index.html").read_text(encoding="utf-8")
    for doc in (html, index):
        assert "<script>window.__xss" not in doc
        assert "<img src=x" not in doc and "<svg onload" not in doc
        assert "&lt;script&gt;window.__xss=1" in doc
    assert "&lt;b&gt;bold&lt;/b&gt;" in html  # the caption's markup shows as text


def test_hostile_ids_get_safe_unique_names():
    names = [campaign_page_name(c) for c in fx.HOSTILE_IDS]
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"campaign-[a-z0-9-]+\.html", name) and len(name) < 80
    assert safe_name("a/b") != safe_name("a-b")
    with pytest.raises(ValueError):
        inside(Path("/tmp/x"), "../y")


def test_hostile_campaign_ids_render_inside_out_dir(tmp_path):
    lake = fx.make_sample_lake(tmp_path, specs=fx.hostile_specs(), n_runs=1)
    out = tmp_path / "site"
    render_dashboards(str(lake.root), str(out), gradcam=False)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "site" in p.parts]
    assert all(out.resolve() in p.resolve().parents for p in written)
    pages = {p.name for p in out.glob("campaign-*.html")}
    assert pages == {campaign_page_name(c) for c in fx.HOSTILE_IDS}
    index = (out / "index.html").read_text(encoding="utf-8")
    for href in re.findall(r'href="([^"]+\.html)"', index):
        assert (out / href).is_file()
    assert not (tmp_path / "etc").exists()


def test_index_offers_the_campaign_table_as_csv(site, sample):
    import csv

    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="campaigns.csv" download' in index
    with open(site / "campaigns.csv", newline="", encoding="utf-8") as fh:
        got = {r["campaign_id"]: r for r in csv.DictReader(fh)}
    rows = {r["campaign_id"]: r for r in aggregate.compute(Lake(str(sample.root)), max_gallery=1).kpis.to_pylist()}
    assert set(got) == set(rows) == set(sample.campaigns)
    for cid, r in rows.items():
        assert int(got[cid]["n_images"]) == r["n_images"] and int(got[cid]["n_faces"]) == r["n_faces"]
        if r["n_faces"]:
            assert float(got[cid]["share_positive"]) == pytest.approx(r["share_positive"], abs=1e-6)
        else:
            assert got[cid]["share_positive"] == ""


def test_csv_cannot_smuggle_spreadsheet_formulas():
    from dashboards.render import campaigns_csv

    rows = [{"campaign_id": cid, "n_images": 1, "n_faces": 0} for cid in
            ('=HYPERLINK("http://x","click")', "+1+1", "-2", "@SUM(A1)", "safe-id", "\tx")]
    import csv
    import io

    first = [r[0] for r in csv.reader(io.StringIO(campaigns_csv(rows, {})))][1:]
    assert first == ["'" + rows[0]["campaign_id"], "'+1+1", "'-2", "'@SUM(A1)", "safe-id", "'\tx"]


# ----------------------------------------------------------------------------- errors and CLI


def test_missing_tables_say_what_to_do(tmp_path):
    with pytest.raises(DashboardError, match=r"no Delta table 'images' at .*run jobs/score_campaign.py"):
        render_dashboards(str(tmp_path / "nope"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_cli_renders(sample, tmp_path, capsys):
    assert cli_main(["render", "--tables", str(sample.root), "--out", str(tmp_path / "o"), "--no-gradcam",
                     "--blur-faces", "--max-gallery", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "index.html")
    assert cli_main(["render", "--tables", str(tmp_path / "missing"), "--out", str(tmp_path / "p")]) == 2
    assert "no Delta table" in capsys.readouterr().err
    assert cli_main(["render", "--tables", str(sample.root), "--out", str(tmp_path / "q"),
                     "--model", str(tmp_path / "no-such-model.keras")]) == 2
    assert "--model" in capsys.readouterr().err and not (tmp_path / "q" / "index.html").exists()


def test_gradcam_finds_model_files_and_pinned_versions(tmp_path):
    """Faces scored by a model file get Grad-CAM when the render is told the file; a pinned
    name@version that is registered loads that exact version, not the newest."""
    from dashboards.explain import ExplainError, Explainer
    from fer_core.lab.architectures import build_model
    from fer_core.models.registry import list_models, model_version

    path = tmp_path / "my-campaign-model.keras"
    build_model("vgg", (48, 48, 1), widths=(4, 8), dense=0).save(path)
    version = model_version(str(path))
    assert version.startswith("my-campaign-model@sha256-")
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    face = {"x": 40, "y": 20, "w": 60, "h": 70, "det_score": 0.9, "landmarks": None}

    overlays, caveat = Explainer({version: str(path)}).overlays(image, [face, face], version)
    assert len(overlays) == 2 and caveat is None
    assert all(o.dtype == np.uint8 and o.ndim == 3 and o.shape[2] == 3 for o in overlays)
    with pytest.raises(ExplainError, match="could not be loaded"):  # without the mapping: no such model
        Explainer().overlays(image, [face], version)

    pinned = next(n for n in list_models() if "@" in n)  # a shipped model's older/pinned version
    model, caveat = Explainer()._model(pinned)
    assert model.version == pinned and caveat is None


def test_campaign_page_counts_its_faces_by_quality_flag(site, sample):
    """The page's face-quality line is the faces table's own count of each flag."""
    from collections import Counter

    _, faces = raw_rows(sample)
    cid = "spring-sale-2026"
    counts = Counter(f["quality"] for f in faces if f["campaign_id"] == cid)
    html = page(site, cid)
    n = sum(counts.values())
    assert f"Face quality: {counts['good']:,} of {n:,} faces good" in html
    for flag in ("small", "blurred", "dark"):
        if counts[flag]:
            assert f"{flag} {counts[flag]:,}" in html, flag
    assert sum(counts[f] for f in ("small", "blurred", "dark")) > 0  # the fixture flags some faces


@pytest.mark.parametrize("partitioned", [False, True])
def test_a_filtered_read_works_after_delta_rs_rewrote_a_file_with_string_views(tmp_path, partitioned):
    """A delete (an erasure, a superseded fetch error) makes delta-rs rewrite the file with string_view
    columns; pyarrow cannot compare their statistics with a string filter, so a read that filters on
    image_id (the gallery's) failed with ArrowNotImplementedError. It now reads the same rows as before,
    null partitions included."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, write_deltalake

    uri = str(tmp_path / "images")
    rows = pa.table({"image_id": [f"i{k}" for k in range(6)], "campaign_id": ["a", "a", "b", "b", None, None],
                     "valence": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    write_deltalake(uri, rows, partition_by=["campaign_id"] if partitioned else None)
    DeltaTable(uri).delete("image_id = 'i0' OR image_id = 'i4'")
    live = DeltaTable(uri).file_uris()
    assert any(pa.types.is_string_view(t) for p in live for t in pq.read_schema(p).types)  # the case at hand
    lake = Lake(str(tmp_path))
    wanted = pa.array(["i1", "i3", "i5"])
    got = lake.read("images", ["image_id", "campaign_id", "valence"], filter=pa.compute.field("image_id").isin(wanted))
    assert sorted(got.to_pylist(), key=lambda r: r["image_id"]) == [
        {"image_id": "i1", "campaign_id": "a", "valence": 0.2}, {"image_id": "i3", "campaign_id": "b", "valence": 0.4},
        {"image_id": "i5", "campaign_id": None, "valence": 0.6}]
    assert got.schema.field("image_id").type == pa.string()
    only_b = lake.read("images", ["image_id"], filter=pa.compute.field("campaign_id") == "b")
    assert sorted(only_b["image_id"].to_pylist()) == ["i2", "i3"]
