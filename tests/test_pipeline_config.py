"""One pipeline config: every shipped YAML resolves to the pipeline it is meant to score with, and the
CLI (``predict``/``serve``) and the job read the same sections with the same defaults."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from fer_core.config import load_dataclass, load_yaml
from fer_core.errors import ConfigError
from fer_core.pipeline_config import DetectorOptions, InferenceConfig, ModelOptions
from fer_core.runtime import RuntimeConfig
from jobs.campaign.config import JobConfig, config_hash, job_config_from_dict, load_job_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# What each shipped config is meant to score with. Every one states model.tta (the default is on,
# fer_core/pipeline_config.py); the job configs run one Python worker per core, hence one TF thread.
JOB_CPU = InferenceConfig(runtime=RuntimeConfig(intra_threads=1, inter_threads=1))
INTENDED: dict[str, tuple[type, InferenceConfig]] = {
    "inference.yaml": (InferenceConfig, InferenceConfig()),  # lists every key with its default
    "default.yaml": (JobConfig, JOB_CPU),
    "folders.yaml": (JobConfig, JOB_CPU),
    "s3.yaml": (JobConfig, JOB_CPU),
    "gpu.yaml": (JobConfig, InferenceConfig(detector=DetectorOptions(max_side=1280),
                                            model=ModelOptions(batch_size=512),
                                            runtime=RuntimeConfig(device="gpu", intra_threads=2, inter_threads=2))),
}


def is_training_config(path: Path) -> bool:
    """The training lab's configs (conf/train_*.yaml, conf/experiments/): TrainConfig, tests/test_train.py."""
    rel = path.relative_to(CONF)
    return rel.name.startswith("train_") or rel.parts[0] == "experiments"


def load(path: Path) -> InferenceConfig:
    """A shipped config through the loader its command uses."""
    cls, _ = INTENDED[path.name]
    return load_yaml(path, InferenceConfig) if cls is InferenceConfig else load_job_config(path)


def shipped_pipeline_configs() -> list[Path]:
    return [p for p in sorted(CONF.rglob("*.yaml")) if not is_training_config(p)]


def test_every_shipped_config_is_known():
    """A new YAML in conf/ must say here what it scores with (or be a training config)."""
    names = [p.name for p in shipped_pipeline_configs()]
    assert sorted(names) == sorted(INTENDED), "add the new config to INTENDED with the pipeline it is meant to run"


@pytest.mark.parametrize("path", shipped_pipeline_configs(), ids=lambda p: str(p.relative_to(CONF)))
def test_shipped_config_resolves_to_its_intended_pipeline(path):
    cfg = load(path)
    _, intended = INTENDED[path.name]
    assert cfg.resolved() == intended.resolved()
    raw = yaml.safe_load(path.read_text())
    assert "tta" in raw["model"], f"{path.name}: state model.tta (the one default is {ModelOptions().tta})"


@pytest.mark.parametrize("name", ["inference.yaml", "default.yaml"])
def test_the_reference_configs_state_every_video_key(name):
    """conf/inference.yaml and conf/default.yaml document the video section key by key (its defaults)."""
    from fer_core.pipeline_config import VideoConfig

    stated = yaml.safe_load((CONF / name).read_text())["video"]
    assert set(stated) == {f.name for f in dataclasses.fields(VideoConfig)}
    assert set(stated["tracking"]) == {f.name for f in dataclasses.fields(VideoConfig().tracking)}
    assert load_dataclass(VideoConfig, stated) == VideoConfig()


def test_every_job_config_scores_like_the_default():
    """The CPU job configs give one config hash: one lake never mixes their scores under one model."""
    hashes = {name: config_hash(load(CONF / name)) for name, (cls, _) in INTENDED.items() if cls is JobConfig}
    assert len({h for n, h in hashes.items() if n != "gpu.yaml"}) == 1, hashes


def test_schedules_run_a_shipped_config():
    """The crontab and the Airflow DAG inherit model.tta from the config they name."""
    named = []
    for path in sorted((CONF / "schedule").iterdir()):
        named += re.findall(r"--config\s+(conf/[\w./-]+\.yaml)", path.read_text())
    assert named, "conf/schedule/ names no config"
    for rel in named:
        assert (REPO / rel).is_file() and Path(rel).name in INTENDED, rel


# ---------------------------------------------------------------- the CLI and the job alike

# Every pipeline section, with a value other than its default for every key.
SECTIONS = {
    "detector": {"name": "retinaface", "score_threshold": 0.8, "min_face_size": 30, "max_side": 800,
                 "nms_iou": 0.3, "small_face_px": 64, "small_face_threshold": 0.6, "engine": "tf"},
    "model": {"name": "fer-vgg@4", "tta": False, "batch_size": 32},
    "sentiment": {"weights": {"happy": 1.0, "surprise": 0.5, "neutral": 0.0, "sad": -0.5, "fear": -0.5,
                              "angry": -1.0, "disgust": -1.0},
                  "label_rule": "valence", "positive_threshold": 0.2, "negative_threshold": -0.1},
    "runtime": {"device": "cpu", "intra_threads": 3, "inter_threads": 2},
    "video": {"enabled": False, "sample_fps": 2.0, "max_frames": 30, "max_seconds": 120.0,
              "max_pixels_per_frame": 1920 * 1080, "gif": True,
              "tracking": {"max_distance": 0.5, "max_scale_change": 2.0, "max_gap_frames": 1, "max_gap_ms": 1500}},
    "quality": {"min_face_px": 40.0, "min_sharpness": 1.0, "min_brightness": 50.0, "max_yaw": 30.0,
                "max_pitch": 30.0},
    "max_pixels": 1_000_000,
    "max_bytes": 2_000_000,
}
JOB_ONLY = {"input": {"path": "dumps/"}, "output": {"path": "lake", "dashboards": False},
            "spark": {"master": "local[1]"}}


def cli_config(command: str, config: Path | None, *flags: str) -> InferenceConfig:
    """The InferenceConfig `python -m fer_core predict|serve` would run with (nothing loaded)."""
    from fer_core.cli import _load_config, build_parser

    argv = [command] + (["photo.jpg"] if command == "predict" else []) + list(flags)
    if config is not None:
        argv += ["--config", str(config)]
    return _load_config(build_parser().parse_args(argv))


def test_the_sections_cover_the_schema_with_no_default():
    assert set(SECTIONS) == {f.name for f in dataclasses.fields(InferenceConfig)}
    cfg, default = load_dataclass(InferenceConfig, SECTIONS), InferenceConfig()
    for name in SECTIONS:
        assert getattr(cfg, name) != getattr(default, name), name


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_cli_and_job_read_the_same_sections_alike(tmp_path, command):
    inference = tmp_path / "inference.yaml"
    inference.write_text(yaml.safe_dump(SECTIONS))
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump({**SECTIONS, **JOB_ONLY}))

    cli = cli_config(command, inference)
    job = load_job_config(job_yaml)
    assert cli == job.pipeline_config() == load_dataclass(InferenceConfig, SECTIONS)
    assert config_hash(cli) == config_hash(job)
    assert config_hash(job) != config_hash(load_job_config(CONF / "default.yaml"))


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_absent_sections_give_the_same_defaults(tmp_path, command):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump(JOB_ONLY))
    configs = [cli_config(command, None), cli_config(command, empty), load_job_config(job_yaml).pipeline_config(),
               job_config_from_dict({}).pipeline_config()]
    assert all(c == InferenceConfig() for c in configs), configs
    # the job declares none of the pipeline's fields itself: it inherits them, defaults and all
    inherited = {f.name: (f.type, f.default, f.default_factory) for f in dataclasses.fields(InferenceConfig)}
    assert {f.name: (f.type, f.default, f.default_factory) for f in dataclasses.fields(JobConfig)
            if f.name in inherited} == inherited


def test_tta_is_on_unless_a_config_or_flag_turns_it_off(tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text("model: {tta: false}\n")
    assert cli_config("predict", None).model.tta is True
    assert cli_config("predict", off).model.tta is False
    assert cli_config("predict", off, "--tta").model.tta is True
    assert cli_config("serve", None, "--no-tta").model.tta is False
    assert job_config_from_dict({}).model.tta is True
    assert config_hash(job_config_from_dict({"model": {"tta": False}})) != config_hash(job_config_from_dict({}))


def test_a_tta_mode_is_read_from_configs_and_flags_in_one_spelling(tmp_path):
    """model.tta also names a mode (issue 25's ten-crop): "flip" is true and "none" false, so they score and
    are identified alike; a view list is kept in one spelling; a misspelt view is refused at load, naming
    the key."""
    from fer_core.identity import scoring_id

    ten = tmp_path / "ten.yaml"
    ten.write_text("model: {tta: ten_crop}\n")
    assert cli_config("predict", ten).model.tta == "ten_crop"
    assert cli_config("predict", None, "--tta-mode", "c, c_flip,tl").model.tta == "c,c_flip,tl"
    assert cli_config("predict", ten, "--tta-mode", "flip").model.tta is True
    assert job_config_from_dict({"model": {"tta": "none"}}).model.tta is False
    flip = job_config_from_dict({"model": {"tta": "flip"}})
    assert flip.model.tta is True and config_hash(flip) == config_hash(job_config_from_dict({}))
    assert scoring_id(flip, "m@1", "d") == scoring_id(job_config_from_dict({}), "m@1", "d")
    crops = job_config_from_dict({"model": {"tta": "tl,c,c_flip"}})
    assert scoring_id(crops, "m@1", "d").startswith("m@1+tta:tl,c,c_flip/")
    assert config_hash(crops) != config_hash(flip)
    with pytest.raises(ConfigError, match=r"model\.tta: unknown view 'middle' in 'c,middle'"):
        job_config_from_dict({"model": {"tta": "c,middle"}})
    with pytest.raises(ConfigError, match=r"model\.tta: expected bool \| str, got 2"):
        job_config_from_dict({"model": {"tta": 2}})


def test_stating_a_detector_default_hashes_like_leaving_it_out():
    stated = job_config_from_dict({"detector": {"name": "retinaface", "score_threshold": 0.9, "max_side": 1024}})
    assert config_hash(stated) == config_hash(job_config_from_dict({}))
    assert config_hash(job_config_from_dict({"detector": {"max_side": 1280}})) != config_hash(stated)


def test_the_scoring_identity_changes_with_everything_that_changes_a_face_and_nothing_else():
    """fer_core.identity: TTA, the detector policy, the sentiment rule and the model make another
    identity; the runtime and the batch size (float rounding only) do not; the shipped CPU configs share one."""
    import dataclasses

    from fer_core.identity import legacy_scoring_id, scoring_id
    from fer_core.pipeline_config import DetectorOptions, InferenceConfig, ModelOptions
    from fer_core.runtime import RuntimeConfig
    from fer_core.sentiment import SentimentConfig
    from jobs.campaign.config import load_job_config

    base = InferenceConfig()
    sid = scoring_id(base, "fer-vgg@5", "rf-1")
    assert sid.startswith("fer-vgg@5+tta/retinaface@0.9,<96px:0.5,1024px,min20/") and len(sid.rsplit("/", 1)[1]) == 8
    same = [dataclasses.replace(base, model=ModelOptions(batch_size=512)),
            dataclasses.replace(base, runtime=RuntimeConfig(intra_threads=1, inter_threads=1)),
            dataclasses.replace(base, detector=DetectorOptions(score_threshold=0.9))]  # the default, stated
    assert {scoring_id(c, "fer-vgg@5", "rf-1") for c in same} == {sid}
    weights = dict(SentimentConfig().weights, surprise=0.5)
    other = [dataclasses.replace(base, model=ModelOptions(tta=False)),
             dataclasses.replace(base, detector=DetectorOptions(score_threshold=0.5)),
             dataclasses.replace(base, detector=DetectorOptions(max_side=1280)),
             dataclasses.replace(base, detector=DetectorOptions(small_face_px=0)),  # the old flat 0.9
             dataclasses.replace(base, sentiment=SentimentConfig(weights=weights))]
    ids = {scoring_id(c, "fer-vgg@5", "rf-1") for c in other} | {scoring_id(base, "fer-vgg@6", "rf-1"),
                                                                 scoring_id(base, "fer-vgg@5", "rf-2")}
    assert len(ids) == 7 and sid not in ids
    assert scoring_id(other[-2], "fer-vgg@5", "rf-1").startswith("fer-vgg@5+tta/retinaface@0.9,1024px,min20/")
    shipped = {scoring_id(load_job_config(REPO / "conf" / f"{n}.yaml"), "fer-vgg@5", "rf-1")
               for n in ("default", "s3", "folders")}
    assert shipped == {sid}
    assert legacy_scoring_id("fer-vgg@5") == "fer-vgg@5~legacy" and legacy_scoring_id(None) == "unknown~legacy"
