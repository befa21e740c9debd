"""THE one Spark adapter around fer_core: mapInPandas / pandas UDFs, broadcast weights, worker-side cache.

Plan of one run: ONE mapInPandas pass per Arrow batch (one Spark stage after the dedupe shuffle;
nothing is collected but file metadata). Inside it, three generator stages are chained:

    detect_faces:    fetch (fsspec) -> FacePipeline.decode -> detect -> align; explodes to one row per
                     face (or one faceless row per image), crops at the model's input size
    classify_faces:  probabilities for all faces of the Arrow batch, predict_on_batch in batches
    write_tables:    sentiment, image-level aggregates, Parquet files of images and faces
                     (lake.write_part_files), one metadata row per file for the driver to commit.

Why one pass and not a mapInPandas + pandas UDF + mapInPandas chain: Spark runs every Python
evaluation node of a stage in its own Python worker process, so three nodes meant three processes
per task slot, each importing TensorFlow and loading both models (~0.76 GB and 10-20 s each).
bench/bench_job.py measured that layout at 0.51x a single-process loop; see the README for the
one-pass figure.

Models are built from weight bytes broadcast by the driver, once per Python worker, and kept in
``MODEL_CACHE`` (a module global of this IMPORTED module, not of ``__main__``: a global in __main__
would be pickled into every task). Heavy imports (TensorFlow, cv2) happen only inside the
factories, on executors. This module never imports deltalake.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from fer_core.errors import IMAGE_STATUSES, ImageTooLargeError
from fer_core.labels import EMOTIONS

__all__ = ["ModelCache", "MODEL_CACHE", "ScoringContext", "make_pipeline_fn", "score", "DETECT_FIELDS",
           "detect_faces", "classify_faces", "write_tables"]

PROB_COLUMNS = [f"p_{e}" for e in EMOTIONS]


class ModelCache:
    """Loaded models (FacePipelines) of one Python worker process, built once and reused across tasks.

    Conditions under which it does its job (modelled on pyspark.ml.functions' ModelCache):
    * It must live in an imported module (here ``jobs.campaign.scoring``), not in ``__main__``:
      only then is it a real process global that tasks share instead of a pickled copy per task.
    * Reuse across tasks needs ``spark.python.worker.reuse=true`` (Spark's default; session.py sets it).
      Without reuse every task pays the model load again (correct, only slower).
    * Keys must name everything that changes the model: model name, weight sha256s, detector options,
      device and threads. The factory gets called only on a miss.
    * At most ``capacity`` entries are kept (least recently used goes first); each holds a TF model.
    * A Python worker runs one task at a time; the lock only protects the rare threaded caller
      and is held while loading, so two threads never build the same model twice.
    """

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a factory ran in this process (tests, bench)

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = factory()
            self.loads += 1
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


MODEL_CACHE = ModelCache()


def make_pipeline_fn(core_cfg: Any, detector_bc: Any, model_bc: Any, key: str) -> Callable[[], Any]:
    """A closure, shipped to executors, that returns this worker's cached FacePipeline.

    core_cfg: fer_core.pipeline.InferenceConfig; detector_bc / model_bc: broadcasts of weight bytes
    (detector_bc may be None for detectors without weights, e.g. haar); key: cache key (see ModelCache).
    The broadcast values are only read on a cache miss.
    """

    def load() -> Any:
        from fer_core.pipeline import FacePipeline

        return FacePipeline.from_config(core_cfg, weights_bytes=model_bc.value,
                                        detector_weights_bytes=None if detector_bc is None else detector_bc.value)

    def pipeline_fn() -> Any:
        # Imported, not referenced as a global: cloudpickle would copy a global into the closure
        # (one cache per task); the import finds this process's one module-level cache.
        from jobs.campaign.scoring import MODEL_CACHE as cache

        return cache.get(key, load)

    return pipeline_fn


@dataclass(frozen=True)
class ScoringContext:
    """Everything the executor functions need, pickled once into the closures."""

    pipeline_fn: Callable[[], Any]
    storage_options: dict[str, str]  # for fetching URIs
    uri_policy: Any  # fer_core.fetch.UriPolicy: where the dump's URIs may point
    max_fetch_bytes: int
    fetch_threads: int  # URIs of one chunk fetched at once
    detect_chunk: int  # images decoded + detected at once (bounds memory per worker)
    run_id: str
    model_version: str
    sentiment: Any  # fer_core SentimentConfig
    images_uri: str
    faces_uri: str
    lake_options: dict[str, str]
    target_file_rows: int
    images_schema: Any  # pyarrow schema of the images table
    faces_schema: Any
    progress: Any = None  # jobs.campaign.progress.ProgressReporter: live counts to the driver, or None


def crop_shape(spec: Any) -> tuple[int, ...]:
    """Shape of one crop as shipped between stages: (s, s) grey for 1-channel models, else (s, s, 3)."""
    s = int(spec.input_size)
    return (s, s) if spec.channels == 1 else (s, s, 3)


# ---------------------------------------------------------------- stage 1: fetch, decode, detect, align

DETECT_FIELDS = [
    ("status", "string"), ("error", "string"), ("width", "int"), ("height", "int"), ("n_faces", "int"),
    ("detector_version", "string"), ("face_index", "int"), ("x", "double"), ("y", "double"), ("w", "double"),
    ("h", "double"), ("det_score", "double"), ("landmarks", "array<double>"), ("crop", "binary"),
]


_FETCH_POOLS: dict[int, Any] = {}
_FETCH_POOLS_LOCK = threading.Lock()


def _fetch_pool(threads: int) -> Any:
    """This Python worker's thread pool for fetching (module state, like MODEL_CACHE: made once, reused)."""
    from concurrent.futures import ThreadPoolExecutor

    with _FETCH_POOLS_LOCK:
        if threads not in _FETCH_POOLS:
            _FETCH_POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="fetch")
        return _FETCH_POOLS[threads]


def _payloads(pdf, ctx: ScoringContext) -> list[Any]:
    """Per row, in row order: image bytes, None (empty cell) or an ImageError (fetch problem).

    The chunk's URIs are fetched at once on ``ctx.fetch_threads`` threads: each fetch mostly waits on the
    store's latency, so one at a time would leave the worker idle (bench/bench_fetch.py).
    """
    from fer_core.errors import ImageError
    from fer_core.fetch import fetch_uri

    def fetch(uri: str) -> Any:
        try:
            return fetch_uri(uri, ctx.uri_policy, ctx.storage_options, ctx.max_fetch_bytes)
        except ImageError as e:
            return e

    out: list[Any] = []
    to_fetch: list[tuple[int, str]] = []
    for data, uri in zip(pdf["image"], pdf["uri"]):
        if data is not None:
            if len(data) > ctx.max_fetch_bytes:
                out.append(ImageTooLargeError(f"image cell holds {len(data)} bytes > max_bytes"))
            else:
                out.append(bytes(data))
        elif uri is None:
            out.append(None)  # null image cell: decode reports status "empty"
        else:
            to_fetch.append((len(out), uri))
            out.append(None)
    uris = [uri for _, uri in to_fetch]
    fetched = _fetch_pool(ctx.fetch_threads).map(fetch, uris) if ctx.fetch_threads > 1 and len(uris) > 1 \
        else map(fetch, uris)
    for (i, _), result in zip(to_fetch, fetched):
        out[i] = result
    return out


def detect_faces(batches: Iterator[Any], ctx: ScoringContext, meta_columns: list[str]) -> Iterator[Any]:
    """mapInPandas body: input rows -> one row per face (explode), or one faceless row per image."""

    from fer_core.errors import ImageError
    from fer_core.preprocess import to_grey

    pipe = ctx.pipeline_fn()
    det_version = pipe.detector.version
    grey = pipe.model.spec.channels == 1
    out_cols = meta_columns + [name for name, _ in DETECT_FIELDS]
    n_detected = 0
    for pdf in batches:
        for start in range(0, len(pdf), ctx.detect_chunk):
            chunk = pdf.iloc[start:start + ctx.detect_chunk]
            if ctx.progress is not None:  # detection is most of an image's time: count images as they reach it
                ctx.progress.report(n_detected)
                n_detected += len(chunk)
            payloads = _payloads(chunk, ctx)
            decoded = [p if isinstance(p, ImageError) else None for p in payloads]
            todo = [i for i, p in enumerate(payloads) if not isinstance(p, ImageError)]
            for i, d in zip(todo, pipe.decode([payloads[i] for i in todo])):
                decoded[i] = d
            ok = [i for i, d in enumerate(decoded) if not isinstance(d, ImageError)]
            detections = dict(zip(ok, pipe.detect_safe([decoded[i] for i in ok])))
            rows: list[dict[str, Any]] = []
            metas = chunk[meta_columns].to_dict("records")
            for i, meta in enumerate(metas):
                d = decoded[i]
                base = {**meta, "detector_version": det_version, "face_index": None, "x": None, "y": None,
                        "w": None, "h": None, "det_score": None, "landmarks": None, "crop": None}
                if isinstance(d, ImageError):
                    rows.append({**base, "status": d.status, "error": str(d), "width": None, "height": None,
                                 "n_faces": 0})
                    continue
                faces = detections[i]
                size = {"width": int(d.shape[1]), "height": int(d.shape[0])}
                if isinstance(faces, ImageError):
                    rows.append({**base, **size, "status": faces.status, "error": str(faces), "n_faces": 0})
                    continue
                if not faces:
                    rows.append({**base, **size, "status": "no_face", "error": None, "n_faces": 0})
                    continue
                crops = pipe.align(d, faces)
                if grey:
                    crops = to_grey(crops)
                for k, (face, crop) in enumerate(zip(faces, crops)):
                    lm = np.asarray(face.landmarks, np.float64).reshape(-1)
                    rows.append({
                        **base, **size, "status": "ok", "error": None, "n_faces": len(faces), "face_index": k,
                        "x": float(face.box[0]), "y": float(face.box[1]), "w": float(face.box[2]),
                        "h": float(face.box[3]), "det_score": float(face.score),
                        "landmarks": lm.tolist() if np.isfinite(lm).all() else None,
                        "crop": np.ascontiguousarray(crop).tobytes(),
                    })
            del decoded
            yield pd.DataFrame(rows, columns=out_cols)


# ---------------------------------------------------------------- stage 2: classify (batched)


def classify_faces(frames: Iterator[Any], ctx: ScoringContext) -> Iterator[Any]:
    """Face-row frames -> the same frames with a ``probs`` column (7 floats, None without a crop).

    All faces of a frame (one Arrow batch) go through one EmotionModel.predict call, which runs
    predict_on_batch in chunks of model.batch_size.
    """
    pipe = ctx.pipeline_fn()
    shape = crop_shape(pipe.model.spec)
    for pdf in frames:
        mask = pdf["crop"].notna().to_numpy()
        values: list[Any] = [None] * len(pdf)
        if mask.any():
            arr = np.stack([np.frombuffer(b, np.uint8) for b in pdf["crop"][mask]]).reshape((-1, *shape))
            for i, p in zip(np.flatnonzero(mask), pipe.classify(arr)):
                values[i] = p
        yield pdf.drop(columns=["crop"]).assign(probs=values)


# ---------------------------------------------------------------- stage 3: aggregate + write Parquet


def _image_rows(group, ctx: ScoringContext, scored_at) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Face rows of ONE image (pandas) -> (images row, faces rows) via fer_core's image_summary."""
    from fer_core.pipeline import image_summary
    from fer_core.sentiment import score_sentiment
    from fer_core.types import Face, FaceResult, ImageResult

    first = group.iloc[0]
    result = ImageResult(status=first["status"], error=None if pd.isna(first["error"]) else first["error"],
                         width=None if pd.isna(first["width"]) else int(first["width"]),
                         height=None if pd.isna(first["height"]) else int(first["height"]))
    face_rows: list[dict[str, Any]] = []
    has_faces = first["status"] == "ok" and not _isnull(first["probs"])
    if has_faces:
        probs = np.stack([np.asarray(p, np.float32) for p in group["probs"]])
        valence, labels = score_sentiment(probs, ctx.sentiment)
        for (_, r), p, v, s in zip(group.iterrows(), probs, valence, labels):
            emotion = EMOTIONS[int(np.argmax(p))]
            face = Face(box=(r["x"], r["y"], r["w"], r["h"]), score=float(r["det_score"]))
            result.faces.append(FaceResult(face=face, probabilities=p, emotion=emotion, sentiment=s, valence=float(v)))
            lm = None if _isnull(r["landmarks"]) else r["landmarks"]
            face_rows.append({
                "image_id": first["image_id"], "campaign_id": first["campaign_id"], "face_index": int(r["face_index"]),
                "x": float(r["x"]), "y": float(r["y"]), "w": float(r["w"]), "h": float(r["h"]),
                "det_score": float(r["det_score"]), "landmarks": None if lm is None else [float(v_) for v_ in lm],
                "emotion": emotion, **{c: float(p[j]) for j, c in enumerate(PROB_COLUMNS)},
                "sentiment": s, "valence": float(v), "model_version": ctx.model_version, "run_id": ctx.run_id,
            })
    summary = image_summary(result, ctx.sentiment)
    meta = {k: first[k] for k in group.columns if k not in _NOT_IMAGE_COLUMNS}
    image = {**meta, "status": result.status, "error": result.error, "width": result.width,
             "height": result.height, **summary, "model_version": ctx.model_version,
             "detector_version": first["detector_version"], "run_id": ctx.run_id, "scored_at": scored_at}
    return image, face_rows


def _isnull(v: Any) -> bool:
    return v is None or (not isinstance(v, (list, np.ndarray)) and pd.isna(v))


_NOT_IMAGE_COLUMNS = {"status", "error", "width", "height", "n_faces", "detector_version", "face_index", "x", "y",
                      "w", "h", "det_score", "landmarks", "crop", "probs"}

FILES_SCHEMA = ("table string, path string, campaign_id string, size long, modification_time long, "
                "num_records long, stats string, counts string")


def write_tables(batches: Iterator[Any], ctx: ScoringContext, progress: Any) -> Iterator[Any]:
    """mapInPandas body: classified face rows -> Parquet files; yields one metadata row per file.

    Rows of one image are contiguous (explode and the scalar UDF keep order within a partition);
    the last image of an Arrow batch is held back until the next batch shows it is complete.
    """
    import json
    from collections import Counter


    from jobs.campaign.lake import write_part_files

    images: list[dict[str, Any]] = []
    faces: list[dict[str, Any]] = []
    counts: Counter = Counter()
    carry = None
    files: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal images, faces
        for table, rows, schema, uri in (("images", images, ctx.images_schema, ctx.images_uri),
                                         ("faces", faces, ctx.faces_schema, ctx.faces_uri)):
            if rows:
                for meta in write_part_files(uri, rows, schema, ctx.run_id, ctx.lake_options):
                    files.append({"table": table, **meta, "counts": None})
        images, faces = [], []

    def consume(pdf) -> None:
        scored_at = pd.Timestamp.now(tz="UTC")
        key = pdf["image_id"]
        groups = (key != key.shift()).cumsum()
        for _, group in pdf.groupby(groups, sort=False):
            image, face_rows = _image_rows(group, ctx, scored_at)
            images.append(image)
            faces.extend(face_rows)
            counts[image["status"]] += 1
            counts["n_faces"] += len(face_rows)
            for face in face_rows:  # the run's mix, for the closing summary
                counts[f"emotion:{face['emotion']}"] += 1
                counts[f"sentiment:{face['sentiment']}"] += 1
        if len(images) + len(faces) >= ctx.target_file_rows:
            flush()

    for pdf in batches:
        if carry is not None:
            pdf = pd.concat([carry, pdf], ignore_index=True)
            carry = None
        if len(pdf) == 0:
            continue
        last = pdf["image_id"].iloc[-1]
        tail = (pdf["image_id"] == last).to_numpy()
        tail_start = len(pdf) - int(np.argmin(tail[::-1])) if not tail.all() else 0
        carry = pdf.iloc[tail_start:].reset_index(drop=True)
        consume(pdf.iloc[:tail_start].reset_index(drop=True))
    if carry is not None and len(carry):
        consume(carry)
    flush()
    n_images = sum(counts[status] for status in IMAGE_STATUSES)  # not the faces' emotion/sentiment counts
    if progress is not None:
        progress.add(n_images)
    if ctx.progress is not None:
        ctx.progress.report(n_images, final=True)
    # The status counts ride on a metadata row of their own (path null) so the driver sums them.
    files.append({"table": "counts", "path": None, "campaign_id": None, "size": 0, "modification_time": 0,
                  "num_records": n_images, "stats": None, "counts": json.dumps(dict(counts))})
    yield pd.DataFrame(files, columns=["table", "path", "campaign_id", "size", "modification_time", "num_records",
                                       "stats", "counts"])


# ---------------------------------------------------------------- the whole plan


def score(todo, ctx: ScoringContext, progress: Any = None):
    """todo (standard input rows) -> DataFrame of file metadata rows (FILES_SCHEMA). Lazy: nothing runs yet."""
    meta_columns = [c for c in todo.columns if c not in ("image", "uri")]

    def one_pass(batches: Iterator[Any]) -> Iterator[Any]:
        faces = detect_faces(batches, ctx, meta_columns)
        return write_tables(classify_faces(faces, ctx), ctx, progress)

    return todo.mapInPandas(one_pass, FILES_SCHEMA)
