"""``python -m fer_core`` end to end in subprocesses, on a real photo written to tmp."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_core.labels import EMOTIONS

skimage_data = pytest.importorskip("skimage.data")
Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fer_core", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(path, quality=92)
    return path


def decode_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_json_annotate_explain_and_a_bad_file(photo, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = tmp_path / "missing.png"
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(blank)
    ann, exp = tmp_path / "ann", tmp_path / "exp"
    proc = run_cli("predict", str(photo), str(bad), str(missing), str(blank), "--json",
                   "--annotate", str(ann), "--explain", str(exp))
    assert proc.returncode == 1, proc.stderr
    assert "broken.jpg: decode_error" in proc.stderr and "missing.png: fetch_error" in proc.stderr

    doc = json.loads(proc.stdout)  # ONE JSON document
    assert [d["image"] for d in doc] == [str(photo), str(bad), str(missing), str(blank)]
    assert [d["status"] for d in doc] == ["ok", "decode_error", "fetch_error", "no_face"]
    good = doc[0]
    assert good["error"] is None and len(good["faces"]) == 1
    face = good["faces"][0]
    assert set(face) == {"box", "score", "landmarks", "probabilities", "emotion", "sentiment", "valence",
                         "frame_ms", "track_id", "quality"}
    assert face["frame_ms"] is None and face["track_id"] is None  # a photo has no frame and no track
    assert (good["media_type"], good["duration_s"], good["n_frames"]) == ("image", None, 1)
    # the identity the job writes on its rows for its default config, so a tried photo matches the lake
    from jobs.campaign.config import load_job_config
    from jobs.campaign.job import resolve_detector, resolve_model

    from fer_core.identity import scoring_id
    job = load_job_config()
    assert good["scoring_id"] == scoring_id(job, resolve_model(job.model.name)[0], resolve_detector(job)[0])
    assert {d["scoring_id"] for d in doc} == {good["scoring_id"]}
    assert face["quality"]["flag"] in ("good", "small", "blurred", "dark", "turned")
    assert face["quality"]["face_px"] == round(min(face["box"][2:]), 1)
    assert len(face["box"]) == 4 and 0.9 <= face["score"] <= 1.0
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
    assert list(face["probabilities"]) == list(EMOTIONS)
    assert abs(sum(face["probabilities"].values()) - 1.0) < 1e-3
    assert face["emotion"] == max(face["probabilities"], key=face["probabilities"].get)
    assert face["sentiment"] in ("positive", "neutral", "negative") and -1 <= face["valence"] <= 1
    assert doc[1]["faces"] == [] and doc[1]["error"] and good["tracks"] is None  # a photo has no tracks

    annotated = decode_png(ann / "astronaut_annotated.png")
    assert annotated.shape == (512, 512, 3)
    original = np.asarray(Image.open(photo).convert("RGB"))
    assert np.abs(annotated.astype(int) - original).max() > 100  # something was drawn
    heat = decode_png(exp / "astronaut_face0_gradcam.png")
    assert heat.ndim == 3 and heat.shape[2] == 3 and heat.shape[0] >= 32
    assert sorted(p.name for p in ann.iterdir()) == ["astronaut_annotated.png", "blank_annotated.png"]
    assert sorted(p.name for p in exp.iterdir()) == ["astronaut_face0_gradcam.png"]
    assert f"{blank}:" not in proc.stderr  # no_face is not an error


def test_human_output_with_example_config_and_exit_0(photo, capsys):
    """In-process (the subprocess path is covered above; this saves a TensorFlow start-up)."""
    from fer_core.cli import main

    code = main(["predict", str(photo), "--tta", "--config", str(REPO / "conf" / "inference.yaml")])
    out = capsys.readouterr().out
    assert code == 0
    assert "1 face" in out and "box x=" in out and "score" in out
    assert all(e in out for e in EMOTIONS) and "emotion" in out and "sentiment" in out and "valence" in out


def test_models_command_lists_models_and_detectors():
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    assert "fer-mini-xception" in proc.stdout and "fer-vgg" in proc.stdout and "retinaface" in proc.stdout
    default = [line for line in proc.stdout.splitlines() if "[default]" in line][0].strip().split()[0]
    assert default.startswith("fer-vgg@")
    listed = [line.strip().split()[0] for line in proc.stdout.splitlines() if line.startswith("  fer-")]
    assert len(listed) == len(set(listed)), listed  # each version once


def test_usage_errors_exit_2(tmp_path, photo):
    assert run_cli().returncode == 2
    assert run_cli("predict").returncode == 2
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  nmae: default\n")
    proc = run_cli("predict", str(photo), "--config", str(cfg))
    assert proc.returncode == 2 and "model.nmae: unknown key" in proc.stderr
    proc = run_cli("predict", str(photo), "--model", "no-such-model")
    assert proc.returncode == 2 and "unknown emotion model 'no-such-model'" in proc.stderr
    proc = run_cli("predict", str(photo), "--annotate", str(photo))  # a file, not a directory
    assert proc.returncode == 2 and "check the output directory" in proc.stderr


def test_importing_fer_core_stays_cheap():
    """The package, its lazy exports and the CLI module load without TensorFlow/Keras/OpenCV."""
    code = (
        "import sys, fer_core, fer_core.cli, fer_core.models; "
        "fer_core.FacePipeline, fer_core.create_emotion_model, fer_core.SentimentConfig, fer_core.heatmaps; "
        "fer_core.models.EmotionModel; "
        "heavy = [m for m in ('tensorflow', 'keras', 'cv2') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real 3 s H.264 MP4 (10 fps) of the astronaut's face moving right across the frame."""
    sys.path.insert(0, str(REPO / "tests"))
    from _videos import encode_clip, sliding_face

    face = skimage_data.astronaut()[0:256, 80:400]
    frame_at, _ = sliding_face(face, canvas_hw=(336, 640), n_frames=30, x0=0, x1=300, y=40)
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    path.write_bytes(encode_clip(frame_at, 30, kind="h264", fps=10))
    return path


def test_predict_a_video_clip_prints_its_frames_and_one_track(clip, capsys):
    """In-process: a clip is one video result, its faces per sampled frame (1 fps), one track."""
    from fer_core.cli import main

    assert main(["predict", str(clip), "--json", "--no-tta"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert (doc["status"], doc["media_type"], doc["width"], doc["height"]) == ("ok", "video", 640, 336)
    assert doc["n_frames"] == 3 and doc["duration_s"] == pytest.approx(3.0, abs=0.15)
    assert [f["frame_ms"] for f in doc["faces"]] == [0, 1000, 2000]
    assert {f["track_id"] for f in doc["faces"]} == {0}
    xs = [f["box"][0] for f in doc["faces"]]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 150  # the box follows the face across the frame
    (track,) = doc["tracks"]  # the one person, summarised as the job's tracks table does
    assert (track["track_id"], track["first_ms"], track["last_ms"], track["n_frames"]) == (0, 0, 2000, 3)
    mean = {e: sum(f["probabilities"][e] for f in doc["faces"]) / 3 for e in EMOTIONS}
    assert track["probabilities"] == pytest.approx(mean, abs=1e-3)
    assert track["emotion"] == max(mean, key=mean.get)
    assert track["valence"] == pytest.approx(sum(f["valence"] for f in doc["faces"]) / 3, abs=1e-3)

    assert main(["predict", str(clip), "--no-tta"]) == 0
    out = capsys.readouterr().out
    assert "video 640x336" in out and "3 frames scored, 1 track" in out
    assert "track 0 at 1000 ms" in out
