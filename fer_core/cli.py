"""Command line: ``python -m fer_core predict IMAGE...``, ``models`` and ``serve`` (the local page).

Exit codes: 0 every image was scored (status ok or no_face); 1 at least one image could
not be read or decoded (the others are still reported; stderr names each file and its
problem); 2 usage or configuration error (bad flag, config file, model or detector name,
weights that cannot be fetched, an output directory that cannot be written).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from fer_core.errors import SCORED_STATUSES

EXIT_OK, EXIT_IMAGE_ERROR, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fer_core",
        description="Detect faces and classify their emotions (7 FER2013 classes) with sentiment.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "predict", help="score image and video files",
        description="Score image and video files: faces (of a video: per sampled frame, linked into tracks), emotions, sentiment.",
        epilog="exit codes: 0 all images scored (ok or no_face); 1 some image unreadable (others still "
        "reported); 2 usage/config error",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, GIF, ...) or video posts (MP4, MOV, WebM, MKV)")
    p.add_argument("--json", action="store_true", help="print one JSON document (a list, one object per image)")
    p.add_argument("--annotate", metavar="OUT_DIR", type=Path,
                   help="write <stem>_annotated.png (boxes, landmarks, emotion, valence) for every decodable image")
    p.add_argument("--explain", metavar="OUT_DIR", type=Path, help="write <stem>_face<k>_gradcam.png Grad-CAM overlays")
    _add_pipeline_flags(p)
    p.add_argument("--batch-images", type=int, default=32, metavar="N", help="images decoded/scored per batch (memory bound)")
    m = sub.add_parser("models", help="list registered emotion models and face detectors")
    m.add_argument("--fetch", action="store_true",
                   help="download (once) and sha256-verify every registered weight file into the cache, for offline use")
    s = sub.add_parser(
        "serve", help="a local web page: upload photos or use the webcam, see what the model sees",
        description="Serve one local page on the same FacePipeline as `predict`: upload photos or turn on the "
        "webcam. Images and frames are scored in memory and never stored.",
    )
    s.add_argument("--port", type=int, default=8501, help="TCP port (default 8501; 0 picks a free one)")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1, this machine only); any other address "
                   "lets other machines use the page and prints a warning")
    _add_pipeline_flags(s)
    return parser


def _add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    """The flags that choose the FacePipeline, the same for ``predict`` and ``serve``."""
    p.add_argument("--detector", metavar="NAME", help="face detector (see `models`); overrides the config")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="emotion model name, .keras/.h5 path or s3:// URI")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average with horizontally flipped crops (model.tta, on by default); overrides the config")
    p.add_argument("--tta-mode", metavar="MODE",
                   help="another test-time augmentation (model.tta): ten_crop, or a comma list of views such as "
                        "c,c_flip,tl,br; corner views need a crop-trained model")
    p.add_argument("--config", metavar="YAML", type=Path,
                   help="pipeline config (conf/inference.yaml: the pipeline sections of a job config, same keys and defaults)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fer_core`` and the ``fer-core`` script; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of the output
    args = build_parser().parse_args(argv)
    from fer_core.errors import ConfigError, WeightsError

    try:
        if args.command == "models":
            return _cmd_models(fetch=args.fetch)
        if args.command == "serve":
            from fer_core.serve import serve

            return serve(_load_config(args), host=args.host, port=args.port)
        return _cmd_predict(args)
    except (ConfigError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # an --annotate/--explain directory that cannot be created or written
        print(f"error: {e}; check the output directory", file=sys.stderr)
        return EXIT_USAGE


# ---------------------------------------------------------------- models


def _cmd_models(fetch: bool = False) -> int:
    from fer_core.detectors import list_detectors
    from fer_core.models.registry import DEFAULT_MODEL, get_spec, list_models
    from fer_core.weights import RETINAFACE_MOBILENET_V2, fetch_weights

    if fetch:
        weights = {w.sha256: w for w in [RETINAFACE_MOBILENET_V2] + [get_spec(n).weights for n in list_models()]}
        for spec in weights.values():
            print(f"weights {spec.name}: {fetch_weights(spec)} (sha256 verified)")

    print("emotion models (--model):")
    for name in list_models():
        spec = get_spec(name)
        if "@" in name and get_spec(name.split("@", 1)[0]) == spec:
            continue  # the newest version is already listed under its plain name
        default = "  [default]" if name == DEFAULT_MODEL else ""
        label = name if "@" in name else f"{name}@{spec.version}"  # older versions are listed as name@version
        print(f"  {label}  input {spec.input_size}x{spec.input_size}x{spec.channels}, "
              f"scaling {spec.scaling}{default}")
        if spec.description:
            print(f"      {spec.description}")
    print("  (or a path / s3:// URI to a .keras or .h5 file, optional <file>.spec.json sidecar)")
    print("face detectors (--detector):")
    for name in list_detectors():
        print(f"  {name}")
    return EXIT_OK


# ---------------------------------------------------------------- predict


def _load_config(args: argparse.Namespace) -> Any:
    """The InferenceConfig of ``--config`` (or the defaults) with ``--detector/--model/--[no-]tta/--tta-mode`` applied."""
    from fer_core.config import load_yaml
    from fer_core.pipeline import InferenceConfig

    cfg = load_yaml(args.config, InferenceConfig) if args.config else InferenceConfig()
    if args.detector:
        cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, name=args.detector))
    if args.model or args.tta is not None or args.tta_mode:
        model = cfg.model
        if args.model:
            model = dataclasses.replace(model, name=args.model)
        if args.tta is not None:
            model = dataclasses.replace(model, tta=args.tta)
        if args.tta_mode:
            model = dataclasses.replace(model, tta=args.tta_mode)
        cfg = dataclasses.replace(cfg, model=model)
    return cfg


def _out_names(paths: Sequence[str]) -> list[str]:
    """A unique file-name stem per input (duplicate stems get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = Path(p).stem or "image"
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}-{n}")
    return out


def _cmd_predict(args: argparse.Namespace) -> int:
    from fer_core.decode import check_byte_size
    from fer_core.errors import ConfigError, FetchError, ImageError
    from fer_core.pipeline import FacePipeline
    from fer_core.report import annotate, image_record, json_document
    from fer_core.types import ImageResult

    if args.batch_images < 1:
        raise ConfigError(f"--batch-images must be >= 1, got {args.batch_images}")
    cfg = _load_config(args)
    for d in (args.annotate, args.explain):  # before loading models: fail fast on a bad directory
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    pipeline = FacePipeline.from_config(cfg)
    names = _out_names(args.images)
    records: list[dict[str, Any]] = []
    failed = False
    for start in range(0, len(args.images), args.batch_images):
        paths = args.images[start:start + args.batch_images]
        datas: list[bytes | None] = []
        results: list[ImageResult | None] = []
        for path in paths:
            try:
                check_byte_size(Path(path).stat().st_size, cfg.max_bytes)
                datas.append(Path(path).read_bytes())
                results.append(None)
            except OSError as e:
                err = FetchError(f"cannot read file: {e.strerror or e}")
                datas.append(None)
                results.append(ImageResult(status=err.status, error=str(err)))
            except ImageError as e:  # larger than max_bytes: refused unread
                datas.append(None)
                results.append(ImageResult(status=e.status, error=str(e)))
        scored = iter(pipeline.score_images([d for d, r in zip(datas, results) if r is None]))
        results = [r if r is not None else next(scored) for r in results]
        for k, (path, data, result) in enumerate(zip(paths, datas, results)):
            if result.status not in SCORED_STATUSES:
                failed = True
                print(f"error: {path}: {result.status}: {result.error}", file=sys.stderr)
            records.append(image_record(path, result, pipeline.scoring_id))
            if not args.json:
                _print_human(path, result)
            # every decodable image gets an annotated copy (so a no_face image is visibly checked);
            # Grad-CAM files exist only per face
            # a video has no one picture to draw on: its faces are listed per frame instead
            if (result.status in SCORED_STATUSES and result.media_type == "image"
                    and (args.annotate or (args.explain and result.faces))):
                image = pipeline.decode([data])[0]
                name = names[start + k]
                if args.annotate:
                    _write_png(args.annotate / f"{name}_annotated.png", annotate(image, result))
                if args.explain:
                    _write_explanations(args.explain, name, image, result, pipeline.model)
    if args.json:
        sys.stdout.write(json_document(records))
    return EXIT_IMAGE_ERROR if failed else EXIT_OK


def _print_human(path: str, result: Any) -> None:
    from fer_core.labels import EMOTIONS

    if result.status not in SCORED_STATUSES:
        print(f"{path}: {result.status} ({result.error})")
        return
    n = len(result.faces)
    if result.media_type == "video":
        n_tracks = len({fr.track_id for fr in result.faces})
        duration = "unknown duration" if result.duration_s is None else f"{result.duration_s:.1f} s"
        print(f"{path}: video {result.width}x{result.height}, {duration}, {result.n_frames} frames scored, "
              f"{n_tracks} track{'s' if n_tracks != 1 else ''}, {n} face{'s' if n != 1 else ''} in all")
    else:
        print(f"{path}: {result.width}x{result.height}, {n} face{'s' if n != 1 else ''}")
    for i, fr in enumerate(result.faces):
        x, y, w, h = (int(round(v)) for v in fr.face.box)
        probs = "  ".join(f"{e} {p:.2f}" for e, p in zip(EMOTIONS, fr.probabilities))
        where = "" if fr.frame_ms is None else f"track {fr.track_id} at {fr.frame_ms} ms: "
        print(f"  face {i}: {where}box x={x} y={y} w={w} h={h}  score {fr.face.score:.3f}")
        print(f"    {probs}")
        print(f"    emotion {fr.emotion}  sentiment {fr.sentiment}  valence {fr.valence:+.2f}")


def _write_explanations(out_dir: Path, name: str, image: Any, result: Any, model: Any) -> None:
    from fer_core.gradcam import explain_faces

    overlays = explain_faces(image, [fr.face for fr in result.faces], model)
    for i, ov in enumerate(overlays):
        _write_png(out_dir / f"{name}_face{i}_gradcam.png", ov)


def _write_png(path: Path, rgb: Any) -> None:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}; check the directory is writable")
    print(f"wrote {path}", file=sys.stderr)
