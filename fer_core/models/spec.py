"""ModelSpec: everything needed to feed an emotion model and read its output."""
from __future__ import annotations

from dataclasses import dataclass, field

from fer_core.labels import EMOTIONS

SCALINGS = ("minus1_1", "unit")


@dataclass(frozen=True)
class ModelSpec:
    """Describes one emotion model's weights, input and output.

    Training, evaluation, the CLI and Spark all call ``preprocess(crops, spec)`` with
    this spec, so the pixels a model sees cannot drift between them.
    """

    name: str
    version: str
    weights: "object"  # fer_core.weights.WeightSpec (kept loose to avoid an import cycle)
    input_size: int = 48
    channels: int = 1
    scaling: str = "minus1_1"
    labels: tuple[str, ...] = EMOTIONS
    crop_margin: float = 0.1
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"ModelSpec {self.name}: channels must be 1 or 3, got {self.channels}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"ModelSpec {self.name}: scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if sorted(self.labels) != sorted(EMOTIONS):
            raise ValueError(f"ModelSpec {self.name}: labels must be a permutation of {EMOTIONS}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, self.channels)

    @property
    def emotion_order(self) -> tuple[int, ...]:
        """Output column of each of EMOTIONS: ``outputs[:, spec.emotion_order]`` is in EMOTIONS order."""
        return tuple(self.labels.index(e) for e in EMOTIONS)
