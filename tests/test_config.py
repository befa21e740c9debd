"""Strict YAML -> dataclass loading, and the example conf/inference.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from fer_core.config import dataclass_to_dict, load_dataclass, load_yaml
from fer_core.errors import ConfigError
from fer_core.pipeline import InferenceConfig

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    size: int = 3
    ratio: float = 0.5
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    tags: tuple[str, ...] = ()
    limit: int | None = None
    extra: dict[str, float] = field(default_factory=dict)
    flag: bool = False


def test_builds_nested_frozen_dataclasses():
    cfg = load_dataclass(Outer, {"name": "x", "inner": {"size": 5, "ratio": 1}, "tags": ["p", "q"], "extra": {"k": 2}})
    assert cfg == Outer(name="x", inner=Inner(size=5, ratio=1.0), tags=("p", "q"), extra={"k": 2.0})
    assert isinstance(cfg.inner.ratio, float) and isinstance(cfg.tags, tuple)
    assert dataclass_to_dict(cfg)["inner"] == {"size": 5, "ratio": 1.0, "mode": "a"}


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"name": "x", "inner": {"sise": 5}}, r"inner\.sise: unknown key.*'size'"),
        ({"name": "x", "colour": 1}, r"colour: unknown key"),
        ({"name": "x", "inner": {"size": "5"}}, r"inner\.size: expected int"),
        ({"name": "x", "inner": {"size": True}}, r"inner\.size: expected int"),
        ({"name": "x", "inner": {"mode": "c"}}, r"inner\.mode: expected one of \['a', 'b'\]"),
        ({"name": "x", "flag": "yes"}, r"flag: expected bool"),
        ({"name": "x", "tags": "p"}, r"tags: expected a list"),
        ({"name": "x", "limit": 1.5}, r"limit: expected"),
        ({"name": "x", "extra": {"k": "v"}}, r"extra\.k: expected float"),
        ({}, r"name: required key is missing"),
    ],
)
def test_errors_name_the_dotted_key(mapping, message):
    with pytest.raises(ConfigError, match=message):
        load_dataclass(Outer, mapping)


def test_prefix_path_is_used_in_messages():
    with pytest.raises(ConfigError, match=r"job\.scoring\.inner\.size"):
        load_dataclass(Outer, {"name": "x", "inner": {"size": None}}, path="job.scoring")


def test_example_inference_yaml_loads_and_matches_defaults():
    cfg = load_yaml(REPO / "conf" / "inference.yaml", InferenceConfig)
    assert cfg.model == InferenceConfig().model
    assert cfg.sentiment == InferenceConfig().sentiment
    assert cfg.detector.name == "retinaface" and cfg.detector.score_threshold == 0.9
    assert cfg.runtime.device == "auto"


def test_yaml_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  name: default\n  tta: false\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: model\.batchsize: unknown key"):
        load_yaml(p, InferenceConfig)


def test_yaml_bad_values(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("runtime: {device: tpu}\n")
    with pytest.raises(ConfigError, match=r"runtime\.device: expected one of"):
        load_yaml(p, InferenceConfig)
    p.write_text("sentiment: {positive_threshold: -0.5}\n")
    with pytest.raises(ConfigError, match=r"sentiment\.negative_threshold: must be below"):
        load_yaml(p, InferenceConfig)
    p.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"model: expected a mapping"):
        load_yaml(p, InferenceConfig)
    with pytest.raises(ConfigError, match=r"cannot read config file"):
        load_yaml(tmp_path / "missing.yaml", InferenceConfig)


def test_empty_yaml_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_yaml(p, InferenceConfig) == InferenceConfig()
