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
    # >input_size: the net was trained on input_size crops of faces resized to frame_size (crop training,
    # Khaireddin & Chen 2021); preprocess() feeds it the centre crop, EmotionModel's crop TTA averages
    # corner and centre crops. 0: the net sees the whole face at input_size.
    frame_size: int = 0
    description: str = ""
    extra: dict = field(default_factory=dict)
    # {"single": KxK, "tta": KxK, "faces": n, "source": "..."}: mean probabilities per true class on
    # held-out faces, rows and columns in EMOTIONS order (fer_core.quantify); empty = unknown.
    mix_calibration: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"ModelSpec {self.name}: channels must be 1 or 3, got {self.channels}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"ModelSpec {self.name}: scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if sorted(self.labels) != sorted(EMOTIONS):
            raise ValueError(f"ModelSpec {self.name}: labels must be a permutation of {EMOTIONS}")
        if self.frame_size and self.frame_size < self.input_size:
            raise ValueError(f"ModelSpec {self.name}: frame_size {self.frame_size} is smaller than input_size "
                             f"{self.input_size}; crops are taken from the frame, so use 0 (no crops) or >= input_size")
        for key, rows in self.mix_calibration.items():  # "single", "tta" (flip), or another TTA mode's name
            if key in ("faces", "source"):
                continue
            k = len(EMOTIONS)
            if not (isinstance(rows, list) and len(rows) == k and all(isinstance(r, list) and len(r) == k for r in rows)
                    and all(abs(sum(r) - 1) < 1e-3 and min(r) >= 0 for r in rows)):
                raise ValueError(f"ModelSpec {self.name}: mix_calibration.{key} must be {k} rows of {k} "
                                 "probabilities summing to 1 (fer_core.quantify.mix_calibration writes it)")

    @property
    def frame(self) -> int:
        """Side faces are resized to before the net's crop is taken (input_size when not crop-trained)."""
        return self.frame_size or self.input_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, self.channels)

    def mix_matrix(self, tta: "bool | str") -> "np.ndarray | None":
        """The confusion profile ``fer_core.quantify.adjusted_mix`` needs, for plain or flip-TTA
        predictions (or another TTA mode calibrated under its own name); None when this model was never
        calibrated for that mode."""
        import numpy as np

        rows = self.mix_calibration.get("single" if tta is False else "tta" if tta is True else str(tta))
        return None if rows is None else np.asarray(rows, np.float64)

    @property
    def emotion_order(self) -> tuple[int, ...]:
        """Output column of each of EMOTIONS: ``outputs[:, spec.emotion_order]`` is in EMOTIONS order."""
        return tuple(self.labels.index(e) for e in EMOTIONS)
