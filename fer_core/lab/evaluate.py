"""Evaluate emotion models on labelled face crops: `python -m fer_core.evaluate --model default --data CSV_OR_DIR --out DIR`.

Writes DIR/metrics.json (top-level `accuracy`), DIR/report.html (confusion matrix, per-class table,
TTA comparison, model comparison, calibration with a reliability diagram, misclassified faces with
Grad-CAM overlays), and DIR/confusion_matrix.png. Every model goes through the same `preprocess` as in training.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fer_core.lab.data import FaceDataset, load_dataset
from fer_core.labels import EMOTIONS
from fer_core.lab.metrics import calibration_metrics, classification_metrics, mcnemar_exact
from fer_core.metrics import wilson_interval
from fer_core.sentiment import SENTIMENTS, SentimentConfig, score_sentiment, sentiment_of_emotions

DEFAULT_SPLITS = ("PublicTest", "test", "val", "train", "Training")


def pick_split(splits: dict[str, FaceDataset], wanted: str | None) -> tuple[str, FaceDataset]:
    """The requested split; else the only split the data has (a file of PrivateTest rows, a test/ folder);
    else the first of DEFAULT_SPLITS that exists."""
    if wanted:
        if wanted not in splits:
            raise ValueError(f"--split {wanted!r} not found; the data has {sorted(splits)}")
        return wanted, splits[wanted]
    present = [name for name, data in splits.items() if len(data)]
    if len(present) == 1:
        return present[0], splits[present[0]]
    for name in DEFAULT_SPLITS:
        if name in present:
            return name, splits[name]
    raise ValueError(f"no usable split in the data ({sorted(splits)}): pass --split NAME to pick one")


def evaluate_model(model, data: FaceDataset, *, tta_compare: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics (and TTA accuracy) for one EmotionModel; returns (metrics, {"single": probs, "tta": probs})."""
    probs, seconds = _timed_predict(model, data.images)
    outputs = {"single": probs}
    predicted = probs.argmax(1)
    metrics = classification_metrics(data.labels, predicted)
    metrics["accuracy_ci95"] = list(wilson_interval(int((predicted == data.labels).sum()), len(data)))
    metrics["model"] = model.version
    metrics["faces_per_s"] = round(len(data) / max(seconds, 1e-9), 1)
    metrics["sentiment"] = sentiment_metrics(data.labels, probs)
    metrics["calibration"] = calibration_metrics(data.labels, probs)
    if tta_compare:
        from fer_core.models.emotion import EmotionModel

        tta = EmotionModel(model.keras_model, model.spec, tta=True, batch_size=model.batch_size)
        outputs["tta"], seconds_tta = _timed_predict(tta, data.images)
        metrics["faces_per_s_tta"] = round(len(data) / max(seconds_tta, 1e-9), 1)
        metrics["accuracy_tta"] = float((outputs["tta"].argmax(1) == data.labels).mean())
        metrics["calibration_tta"] = calibration_metrics(data.labels, outputs["tta"])
    metrics["mix"] = mix_metrics(data.labels, outputs, model.spec)
    return metrics, outputs


def _summary_line(m: dict) -> str:
    """One model's accuracy and speed, single pass and (when measured) with flip TTA."""
    line = f"{m['model']}: accuracy {m['accuracy']:.4f} at {m['faces_per_s']:.0f} faces/s"
    if "accuracy_tta" in m:
        line += f", TTA {m['accuracy_tta']:.4f} at {m['faces_per_s_tta']:.0f} faces/s"
    return line


def _timed_predict(model, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Probabilities and the seconds they took, after one warm-up batch so that tracing the model's
    function is not counted: single-pass and TTA speeds are then comparable within one run."""
    model.predict(images[: model.batch_size])
    t0 = time.perf_counter()
    probs = model.predict(images)
    return probs, time.perf_counter() - t0


def mix_metrics(labels: np.ndarray, outputs: dict[str, np.ndarray], spec) -> dict:
    """The evaluated faces taken as one campaign: their true emotion mix against the estimates the job
    writes (counted top emotions, mean probability, and the confusion-adjusted mix when the model has a
    profile), per pass, with the mean absolute error in points. On a user's own labelled faces this shows
    whether the model's profile holds there before trusting ``adjusted_share_*``."""
    from fer_core.quantify import adjusted_mix

    k = len(EMOTIONS)
    truth = np.bincount(labels, minlength=k) / max(len(labels), 1)
    result: dict = {"labels": list(EMOTIONS), "true": np.round(truth, 4).tolist()}
    for name, probs in outputs.items():
        estimates = {"counted": np.bincount(probs.argmax(1), minlength=k) / max(len(probs), 1),
                     "mean_probability": probs.mean(0)}
        matrix = spec.mix_matrix(tta=name == "tta")
        if matrix is not None:
            estimates["adjusted"] = adjusted_mix(estimates["mean_probability"], matrix)
        result[name] = {est: {"mix": np.round(np.asarray(v, np.float64), 4).tolist(),
                              "mae_points": round(float(100 * np.abs(v - truth).mean()), 3)}
                        for est, v in estimates.items()}
    return result


def paired_test(labels: np.ndarray, main: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """McNemar's exact test of another model against the main one on the same faces, per prediction mode.

    Accuracy differences of a point or two on a few thousand faces are often noise; this says which are not.
    """
    out = {}
    for mode in ("single", "tta"):
        if mode in main and mode in other:
            test = mcnemar_exact(main[mode].argmax(1) == labels, other[mode].argmax(1) == labels)
            out[mode] = {"only_main_right": test["only_a"], "only_this_right": test["only_b"], "p_value": test["p_value"]}
    return out


def sentiment_metrics(labels: np.ndarray, probs: np.ndarray, cfg: SentimentConfig | None = None) -> dict:
    """How well the sentiment read-out agrees with the sentiment group of the true emotion labels."""
    _, predicted = score_sentiment(probs, cfg)
    result = classification_metrics(sentiment_of_emotions(labels, cfg), np.array([SENTIMENTS.index(s) for s in predicted]),
                                    labels=SENTIMENTS)
    result["label_rule"] = (cfg or SentimentConfig()).label_rule
    return result


def confusion_png(cm: np.ndarray, path: Path, labels: tuple[str, ...] = EMOTIONS) -> None:
    """Row-normalised confusion matrix as a PNG (drawn with OpenCV: no plotting stack needed)."""
    import cv2

    cell, left, top = 70, 90, 40
    n = len(labels)
    img = np.full((top + cell * n + 70, left + cell * n + 10, 3), 255, np.uint8)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for i in range(n):
        for j in range(n):
            v = float(norm[i, j])
            colour = tuple(int(255 - v * c) for c in (200, 120, 20))  # white -> blue (BGR)
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), colour, -1)
            ink = (255, 255, 255) if v > 0.5 else (0, 0, 0)
            cv2.putText(img, f"{v:.2f}", (x0 + 12, y0 + 32), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ink, 1, cv2.LINE_AA)
            cv2.putText(img, str(cm[i, j]), (x0 + 12, y0 + 52), cv2.FONT_HERSHEY_SIMPLEX, 0.4, ink, 1, cv2.LINE_AA)
        cv2.putText(img, labels[i], (4, top + i * cell + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, labels[i][:7], (left + i * cell + 4, top + n * cell + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "true (rows) vs predicted (columns)", (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def misclassified_gallery(model, data: FaceDataset, probs: np.ndarray, out: Path, limit: int) -> list[dict]:
    """The most confident mistakes, each saved as crop + Grad-CAM overlay PNG."""
    import cv2

    from fer_core.gradcam import heatmaps, overlay

    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != data.labels)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:limit]
    if len(wrong) == 0:
        return []
    folder = out / "misclassified"
    folder.mkdir(parents=True, exist_ok=True)
    maps = heatmaps(model, data.images[wrong])
    items = []
    for k, (i, hm) in enumerate(zip(wrong, maps)):
        face = cv2.resize(data.images[i], (96, 96), interpolation=cv2.INTER_LINEAR)
        over = overlay(face, hm)
        pair = np.concatenate([np.repeat(face[..., None], 3, -1), over], axis=1)
        name = f"{k:03d}_true-{EMOTIONS[data.labels[i]]}_pred-{EMOTIONS[pred[i]]}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))
        items.append({"index": int(i), "true": EMOTIONS[data.labels[i]], "predicted": EMOTIONS[pred[i]],
                      "confidence": float(probs[i, pred[i]]), "file": f"misclassified/{name}"})
    return items


REPORT_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation: {{ main.model }}</title>
<script src="plotly.min.js"></script>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.gallery{display:flex;flex-wrap:wrap;gap:12px}
.gallery figure{margin:0;font-size:12px;text-align:center}</style></head><body>
<h1>Evaluation of {{ main.model }}</h1>
<p>Data: {{ data_name }} ({{ main.n }} faces, split <code>{{ split }}</code>). Accuracy <b>{{ "%.2f"|format(100*main.accuracy) }}%</b>
(95% interval {{ "%.1f"|format(100*main.accuracy_ci95[0]) }}-{{ "%.1f"|format(100*main.accuracy_ci95[1]) }}%),
macro-F1 {{ "%.3f"|format(main.macro_f1) }}{% if main.accuracy_tta is defined %}, with flip TTA {{ "%.2f"|format(100*main.accuracy_tta) }}%{% endif %}.</p>
{% if compare %}<h2>Models compared in this run</h2><table><tr><th>model</th><th>accuracy</th><th>accuracy (TTA)</th><th>macro-F1</th><th>ECE</th><th>faces/s</th><th>faces/s (TTA)</th><th>vs {{ main.model }}: faces right only by it / only by this model, McNemar p</th></tr>
{% for m in [main] + compare %}<tr><td>{{ m.model }}</td><td>{{ "%.4f"|format(m.accuracy) }}</td><td>{{ "%.4f"|format(m.accuracy_tta) if m.accuracy_tta is defined else "" }}</td><td>{{ "%.4f"|format(m.macro_f1) }}</td><td>{{ "%.3f"|format(m.calibration.ece) }}</td><td>{{ m.faces_per_s }}</td><td>{{ m.faces_per_s_tta if m.faces_per_s_tta is defined else "" }}</td>
<td>{% for mode, t in (m.vs_main or {}).items() %}{{ mode }}: {{ t.only_main_right }} / {{ t.only_this_right }}, p = {{ "%.3f"|format(t.p_value) }}{% if not loop.last %}; {% endif %}{% endfor %}</td></tr>{% endfor %}</table>
<p>McNemar's exact test counts only the faces exactly one of the two models got right; p &lt; 0.05 means a difference this
data can show, larger p means the accuracies may differ by chance alone.</p>{% endif %}
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for name, c in main.per_class.items() %}<tr><td>{{ name }}</td><td>{{ "%.3f"|format(c.precision) }}</td><td>{{ "%.3f"|format(c.recall) }}</td><td>{{ "%.3f"|format(c.f1) }}</td><td>{{ c.support }}</td></tr>{% endfor %}</table>
<h2>Sentiment read-out</h2><p>The product's sentiment label (rule <code>{{ main.sentiment.label_rule }}</code>) against the
sentiment group of the true emotion (happy and surprise positive, neutral neutral, the rest negative): accuracy
<b>{{ "%.2f"|format(100*main.sentiment.accuracy) }}%</b>, macro-F1 {{ "%.3f"|format(main.sentiment.macro_f1) }}.</p>
<table><tr><th>sentiment</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for name, c in main.sentiment.per_class.items() %}<tr><td>{{ name }}</td><td>{{ "%.3f"|format(c.precision) }}</td><td>{{ "%.3f"|format(c.recall) }}</td><td>{{ "%.3f"|format(c.f1) }}</td><td>{{ c.support }}</td></tr>{% endfor %}</table>
<h2>Calibration</h2><p>Valence and the sentiment label are sums of these probabilities, so they should mean what they say:
of the faces given about 70% confidence, about 70% should be right. ECE is the face-weighted gap between accuracy and mean
confidence over {{ main.calibration.n_bins }} confidence bins (0 is perfect).</p>
<table><tr><th>prediction</th><th>ECE</th><th>largest bin gap</th><th>NLL</th><th>Brier</th><th>mean confidence</th><th>accuracy</th></tr>
{% for name, c in calibrations %}<tr><td>{{ name }}</td><td>{{ "%.3f"|format(c.ece) }}</td><td>{{ "%.3f"|format(c.mce) }}</td><td>{{ "%.3f"|format(c.nll) }}</td><td>{{ "%.3f"|format(c.brier) }}</td><td>{{ "%.3f"|format(c.mean_confidence) }}</td><td>{{ "%.3f"|format(c.accuracy) }}</td></tr>{% endfor %}</table>
<div id="reliability" style="width:640px;height:420px"></div>
<script type="application/json" id="reliability-data">{{ reliability_json }}</script>
<script>const r=JSON.parse(document.getElementById('reliability-data').textContent);
Plotly.newPlot('reliability',[{type:'scatter',mode:'lines',x:[0,1],y:[0,1],name:'perfectly calibrated',line:{dash:'dot',color:'#999'}}].concat(
r.map(s=>({type:'scatter',mode:'lines+markers',name:s.name,x:s.confidence,y:s.accuracy,text:s.count,hovertemplate:'confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{text} faces'}))),
{xaxis:{title:{text:'mean confidence in bin'},range:[0,1]},yaxis:{title:{text:'accuracy in bin'},range:[0,1]},margin:{t:20}},{displayModeBar:false});</script>
<h2>Emotion mix of these faces</h2><p>All {{ main.n }} faces taken as one campaign: the true mix against what the
job's campaigns table would report (mean absolute error per emotion, in points). "adjusted" uses the model's confusion
profile (fitted on other faces); if it is far off here, do not trust <code>adjusted_share_*</code> on faces like these.</p>
<table><tr><th>prediction</th><th>estimate</th>{% for e in main.mix.labels %}<th>{{ e }}</th>{% endfor %}<th>MAE (points)</th></tr>
<tr><td></td><td>true</td>{% for v in main.mix.true %}<td>{{ "%.1f"|format(100*v) }}%</td>{% endfor %}<td></td></tr>
{% for name in ["single", "tta"] if name in main.mix %}{% for est, r in main.mix[name].items() %}<tr><td>{{ name }}</td><td>{{ est }}</td>{% for v in r.mix %}<td>{{ "%.1f"|format(100*v) }}%</td>{% endfor %}<td>{{ "%.2f"|format(r.mae_points) }}</td></tr>{% endfor %}{% endfor %}</table>
<h2>Confusion matrix</h2><div id="cm" style="width:640px;height:560px"></div>
<script type="application/json" id="cm-data">{{ cm_json }}</script>
<script>const d=JSON.parse(document.getElementById('cm-data').textContent);
Plotly.newPlot('cm',[{type:'heatmap',z:d.z,x:d.labels,y:d.labels,text:d.counts,texttemplate:'%{z:.2f}<br>%{text}',colorscale:'Blues'}],
{xaxis:{title:{text:'predicted'}},yaxis:{title:{text:'true'},autorange:'reversed'},margin:{t:20}},{displayModeBar:false});</script>
<p><img src="confusion_matrix.png" alt="confusion matrix (PNG)" width="400"></p>
<h2>Most confident mistakes, with Grad-CAM</h2><div class="gallery">
{% for m in mistakes %}<figure><img src="{{ m.file }}" alt="misclassified face"><figcaption>true {{ m.true }} / predicted {{ m.predicted }} ({{ "%.2f"|format(m.confidence) }})</figcaption></figure>{% endfor %}
</div></body></html>"""


def _json_for_script(text: str) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' can close the tag."""
    from markupsafe import Markup

    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def write_report(out: Path, main: dict, compare: list[dict], mistakes: list[dict], data_name: str, split: str) -> None:
    import jinja2
    import plotly.offline

    cm = np.asarray(main["confusion_matrix"])
    norm = (cm / np.maximum(cm.sum(1, keepdims=True), 1)).round(3).tolist()
    cm_json = json.dumps({"z": norm, "counts": cm.tolist(), "labels": main["labels"]})
    calibrations = [("single pass", main["calibration"])]
    if "calibration_tta" in main:
        calibrations.append(("flip TTA", main["calibration_tta"]))
    reliability_json = json.dumps([{"name": name, "confidence": [b["confidence"] for b in c["bins"]],
                                    "accuracy": [b["accuracy"] for b in c["bins"]], "count": [b["count"] for b in c["bins"]]}
                                   for name, c in calibrations])
    cm_json, reliability_json = (_json_for_script(t) for t in (cm_json, reliability_json))
    js = out / "plotly.min.js"
    if not js.exists():
        js.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
    env = jinja2.Environment(autoescape=True)
    html = env.from_string(REPORT_TEMPLATE).render(main=main, compare=compare, mistakes=mistakes, data_name=data_name,
                                                   split=split, calibrations=calibrations, cm_json=cm_json,
                                                   reliability_json=reliability_json)
    (out / "report.html").write_text(html, encoding="utf-8")


def evaluate(model_name: str, data_path: str, out_dir: str, *, split: str | None = None, compare: tuple[str, ...] = (),
             tta: bool = True, limit: int = 0, n_mistakes: int = 24) -> dict:
    """Evaluate `model_name` (and any `compare` models) on one split; write metrics.json + report.html."""
    from fer_core.models import create_emotion_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits, report = load_dataset(data_path)
    split_name, data = pick_split(splits, split)
    if limit:
        data = data.subset(np.arange(min(limit, len(data))))
    print(report.summary(), flush=True)
    why = "asked for" if split else ("the only split in the data" if len([d for d in splits.values() if len(d)]) == 1
                                     else f"the first present of {', '.join(DEFAULT_SPLITS)}")
    print(f"evaluating split {split_name} ({len(data)} faces; {why})", flush=True)
    model = create_emotion_model(model_name)
    main, outputs = evaluate_model(model, data, tta_compare=tta)
    print(_summary_line(main), flush=True)
    others = []
    for name in compare:
        m, other_outputs = evaluate_model(create_emotion_model(name), data, tta_compare=tta)
        m["vs_main"] = paired_test(data.labels, outputs, other_outputs)
        print(_summary_line(m) + f" (vs {main['model']}: McNemar p = {m['vs_main']['single']['p_value']:.3f})", flush=True)
        others.append(m)
    mistakes = misclassified_gallery(model, data, outputs["single"], out, n_mistakes)
    confusion_png(np.asarray(main["confusion_matrix"]), out / "confusion_matrix.png")
    result = {**main, "data": str(data_path), "split": split_name, "compare": others}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    write_report(out, main, others, mistakes, Path(data_path).name, split_name)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fer_core.evaluate", description=__doc__)
    p.add_argument("--model", default="default", help="registered name, 'default', or a .keras/.h5 path or URI")
    p.add_argument("--data", required=True, help="FER2013 CSV (.csv/.csv.gz) or class-folder root of face crops")
    p.add_argument("--out", required=True, help="output directory for metrics.json and report.html")
    p.add_argument("--split", help="split to evaluate (default: the only split in the data, else the first of "
                                   "PublicTest/test/val/train/Training)")
    p.add_argument("--compare", action="append", default=[], help="another model to evaluate in the same run (repeatable)")
    p.add_argument("--no-tta", action="store_true", help="skip the flip-TTA comparison")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N faces (smoke runs)")
    p.add_argument("--mistakes", type=int, default=24, help="misclassified faces to show with Grad-CAM")
    a = p.parse_args(argv)
    try:
        evaluate(a.model, a.data, a.out, split=a.split, compare=tuple(a.compare), tta=not a.no_tta,
                 limit=a.limit, n_mistakes=a.mistakes)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

