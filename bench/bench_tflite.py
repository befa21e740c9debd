"""Would TensorFlow Lite (fp32, or int8 post-training quantization) make the classifier fast enough for flip TTA?

The default model reaches the 68% PublicTest target only with flip TTA, which halves the classifier's
speed (on an AVX2-only 2-core CPU ~500 faces/s single pass; on one with AVX-512 ~1,800). This converts the served (BatchNormalization-folded) model to TFLite, fp32 and full-integer
int8 (calibrated on Training faces, never on PublicTest), and measures in one run: PublicTest accuracy
with and without TTA, and faces/s against the Keras model the job uses (same batch, same threads).
Needs ../shared/data/fer2013. Usage:

    .venv/bin/python bench/bench_tflite.py [--model fer-vgg@5] [--batch 256] [--reps 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fer_core  # noqa: E402  (before TensorFlow: it turns oneDNN on)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "fer2013.csv.gz"


def convert(keras_model, calibration: np.ndarray | None) -> bytes:
    """TFLite flatbuffer: fp32, or int8 weights and activations (float in/out) when calibration is given."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if calibration is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def tflite_forward(blob: bytes, batch: int, threads: int):
    """x (N, s, s, c) float32 -> model outputs, in fixed-size batches (the last one zero-padded)."""
    import tensorflow as tf

    it = tf.lite.Interpreter(model_content=blob, num_threads=threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    it.allocate_tensors()

    def forward(x: np.ndarray) -> np.ndarray:
        res = []
        for s in range(0, len(x), batch):
            chunk = x[s:s + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.float32)])
            it.set_tensor(inp["index"], np.ascontiguousarray(chunk, np.float32))
            it.invoke()
            res.append(it.get_tensor(out["index"])[:n].copy())
        return np.concatenate(res)

    return forward


def faces_per_s(forward, x: np.ndarray, reps: int) -> float:
    forward(x)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - t0)
    return len(x) / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--timing-faces", type=int, default=2048)
    parser.add_argument("--calibration", type=int, default=512, help="Training faces for int8 calibration")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the FER2013 CSV beside the repository")

    from fer_core.lab.data import load_fer2013_csv
    from fer_core.models.registry import create_emotion_model
    from fer_core.preprocess import preprocess

    model = create_emotion_model(args.model)
    splits, _ = load_fer2013_csv(DATA)
    train, test = splits["Training"], splits["PublicTest"]
    rng = np.random.default_rng(0)
    calibration = preprocess(train.images[rng.choice(len(train), args.calibration, replace=False)], model.spec)
    x = preprocess(test.images, model.spec)
    order = list(model.spec.emotion_order)
    threads = os.cpu_count() or 1

    def keras_forward(xb: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(model.inference_model.predict_on_batch(xb[s:s + args.batch]))
                               for s in range(0, len(xb), args.batch)])

    runtimes = {"keras (the job's)": keras_forward,
                "tflite fp32": tflite_forward(convert(model.inference_model, None), args.batch, threads),
                "tflite int8": tflite_forward(convert(model.inference_model, calibration), args.batch, threads)}
    print(f"{model.version}: {len(x)} PublicTest faces, batch {args.batch}, {threads} threads; "
          f"int8 calibrated on {args.calibration} Training faces")
    base = None
    for name, forward in runtimes.items():
        p, pf = forward(x)[:, order], forward(x[:, :, ::-1])[:, order]
        acc = float((p.argmax(1) == test.labels).mean())
        acc_tta = float(((p + pf).argmax(1) == test.labels).mean())
        speed = faces_per_s(forward, x[: args.timing_faces], args.reps)
        base = base or speed
        print(f"{name:18s} accuracy {acc:.4f}  with flip TTA {acc_tta:.4f}  {speed:6.0f} faces/s "
              f"(x{speed / base:.2f}), with TTA {speed / 2:6.0f}")


if __name__ == "__main__":
    main()
