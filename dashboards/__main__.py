"""``python -m dashboards render --tables DIR_OR_URI --out DIR [--blur-faces] [--no-gradcam] [--from-scratch]``."""
from __future__ import annotations

import argparse
import sys

from fer_core.config import key_value_arg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dashboards",
                                     description="Render offline HTML dashboards from the job's Delta tables.")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render index.html and one page per campaign")
    render.add_argument("--tables", required=True,
                        help="folder or URI holding the Delta tables images/, faces/, campaigns/, runs/")
    render.add_argument("--out", required=True, help="output folder (created if missing)")
    render.add_argument("--blur-faces", action="store_true", help="blur every face in thumbnails and Grad-CAM crops")
    render.add_argument("--no-gradcam", dest="gradcam", action="store_false",
                        help="skip Grad-CAM overlays (no TensorFlow/model load)")
    render.add_argument("--model", action="append", default=[], metavar="PATH_OR_URI",
                        help="a model file (.keras/.h5) the job was given, for Grad-CAM of the faces it scored; "
                             "repeatable (registered models need nothing)")
    render.add_argument("--max-gallery", type=int, default=8, help="images per gallery side (default 8)")
    render.add_argument("--from-scratch", dest="incremental", action="store_false",
                        help="draw every gallery image and write every page again, reusing nothing an earlier "
                             "render left in --out (the pages are the same)")
    render.add_argument("--storage-option", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                        help="storage option for s3:// tables (e.g. AWS_ENDPOINT_URL=http://127.0.0.1:9000); "
                             "repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dashboards.render import render_dashboards
    from dashboards.tables import DashboardError

    try:
        models = _model_versions(args.model, dict(args.storage_option) or None)
        index = render_dashboards(args.tables, args.out, storage_options=dict(args.storage_option) or None,
                                  blur_faces=args.blur_faces, gradcam=args.gradcam, max_gallery=args.max_gallery,
                                  models=models, incremental=args.incremental)
    except DashboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(index)
    return 0


def _model_versions(paths: list[str], storage_options: dict | None) -> dict[str, str]:
    """model_version (as the job stored it) -> path, for each --model file."""
    if not paths:
        return {}
    from fer_core.storage import fsspec_options
    from dashboards.tables import DashboardError

    try:
        from fer_core.models.registry import model_version
    except ImportError as exc:
        raise DashboardError(f"--model needs fer_core installed ({exc})") from exc
    out = {}
    for path in paths:
        try:
            out[model_version(path, storage_options=fsspec_options(path, storage_options) or None)] = path
        except Exception as exc:  # missing file, bad sidecar
            raise DashboardError(f"--model {path}: {type(exc).__name__}: {exc}") from exc
    return out


if __name__ == "__main__":
    sys.exit(main())
