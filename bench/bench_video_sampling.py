"""Seek or decode on? fer_core.video.sample_frames' three strategies on the same clips, in one run.

Clips (made here with PyAV's libx264/libvpx at 30 fps, 4:3, a sliding texture so P-frames carry content) vary in length, keyframe interval and sampling rate. For each, the three strategies sample
the same frames (checked); the table gives the best-of-N wall time, frames decoded and seeks, and the
ratios against "sequential" (decode every frame up to the last target, keep the sampled ones).

    flock /tmp/heavy.lock .venv/bin/python bench/bench_video_sampling.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# (kind, height, seconds, keyframe interval in s, sample_fps); max_frames is the default 60
CASES = (
    ("h264", 240, 10, 1, 1.0), ("h264", 240, 10, 10, 1.0),
    ("h264", 240, 60, 1, 1.0), ("h264", 240, 60, 4, 1.0), ("h264", 240, 60, 10, 1.0),
    ("h264", 240, 60, 1, 5.0), ("h264", 240, 300, 2, 0.2), ("h264", 240, 300, 10, 0.2),
    ("h264", 720, 30, 2, 1.0), ("h264", 720, 30, 4, 1.0),
    ("vp8", 240, 60, 1, 1.0), ("vp8", 240, 60, 10, 1.0),
)
FPS = 30
STRATEGIES = ("sequential", "seek", "auto")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per strategy and clip; the best is kept")
    args = ap.parse_args(argv)

    from _videos import encode_clip, moving_texture
    from fer_core.video import VideoOptions, sample_frames

    print(f"{'clip':<40}{'fps':>5}  " + "".join(f"{s + ' ms/dec/seek':>24}" for s in STRATEGIES)
          + f"{'seek/seq':>10}{'auto/seq':>10}")
    for kind, height, seconds, key_s, sample_fps in CASES:
        t0 = time.perf_counter()
        extra = {"x264-params": "scenecut=0"} if kind == "h264" else {}
        data = encode_clip(moving_texture(height, height * 4 // 3), seconds * FPS, kind=kind, fps=FPS, gop=key_s * FPS,
                           codec_options=extra)
        encode_s = time.perf_counter() - t0
        opts = VideoOptions(sample_fps=sample_fps)
        best: dict[str, float] = {}
        work: dict[str, tuple[int, int]] = {}
        sampled: dict[str, list[int]] = {}
        for _ in range(args.repeats):
            for strategy in STRATEGIES:  # interleaved, so drift hits all three alike
                t = time.perf_counter()
                result = sample_frames(data, opts, strategy=strategy)
                best[strategy] = min(best.get(strategy, float("inf")), time.perf_counter() - t)
                work[strategy] = (result.n_decoded, result.n_seeks)
                sampled[strategy] = result.frame_ms
        assert sampled["seek"] == sampled["sequential"] == sampled["auto"], f"strategies disagree on {kind}"
        name = f"{kind} {height}p {seconds}s key {key_s}s ({len(data) // 2**20} MB, enc {encode_s:.0f}s)"
        cells = "".join(f"{best[s] * 1000:>10.1f} {work[s][0]:>6} {work[s][1]:>5}  " for s in STRATEGIES)
        print(f"{name:<40}{sample_fps:>5}  {cells}{best['seek'] / best['sequential']:>10.2f}"
              f"{best['auto'] / best['sequential']:>10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
