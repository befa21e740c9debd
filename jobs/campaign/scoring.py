"""THE one Spark adapter around fer_core: one mapInPandas pass, broadcast weights, a worker-side cache.

A thin closure around one predict function, as pyspark's ``predict_batch_udf`` is: per chunk of
input rows, ``score_batches`` fetches the payloads (bytes, or a typed fetch error per row), calls the
worker's FacePipeline (``score_images``: the one place that orders decode -> detect -> align ->
classify -> sentiment), maps each ImageResult to table rows (``fer_core.tables.image_rows``, and for a
video ``track_rows``) and writes
them as Parquet files (``lake_files.write_part_files``); the driver commits the files' metadata.

Models are built from weight bytes broadcast by the driver, once per Python worker, and kept in
``MODEL_CACHE`` (a module global of this IMPORTED module, not of ``__main__``: a global in __main__
would be pickled into every task). Heavy imports (TensorFlow, cv2) happen only inside the
factories, on executors. Nothing imported here loads deltalake (lake_files writes with pyarrow).
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from fer_core.errors import ImageTooLargeError
from fer_core.tables import STATUSES

__all__ = ["ModelCache", "MODEL_CACHE", "ScoringContext", "make_pipeline_fn", "score", "score_batches",
           "fetch_payloads", "PartWriter", "FILES_SCHEMA"]

FILES_COLUMNS = ["table", "path", "campaign_id", "size", "modification_time", "num_records", "stats", "counts"]
FILES_SCHEMA = ("table string, path string, campaign_id string, size long, modification_time long, "
                "num_records long, stats string, counts string")
"""One row per written Parquet file (its add-action metadata), plus one ``counts`` row per task."""


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
    scoring_id: str  # fer_core.identity: on every images and faces row
    images_uri: str
    faces_uri: str
    lake_options: dict[str, str]
    target_file_rows: int
    images_schema: Any  # pyarrow schema of the images table
    faces_schema: Any
    progress: Any = None  # jobs.campaign.progress.ProgressReporter: live counts to the driver, or None
    tracks_uri: str = ""  # the tracks table (video posts: one row per track); "" writes none (a fetch-only caller)
    tracks_schema: Any = None


# ---------------------------------------------------------------- fetch


_FETCH_POOLS: dict[int, Any] = {}
_FETCH_POOLS_LOCK = threading.Lock()


def _fetch_pool(threads: int) -> Any:
    """This Python worker's thread pool for fetching (module state, like MODEL_CACHE: made once, reused)."""
    from concurrent.futures import ThreadPoolExecutor

    with _FETCH_POOLS_LOCK:
        if threads not in _FETCH_POOLS:
            _FETCH_POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="fetch")
        return _FETCH_POOLS[threads]


def fetch_payloads(pdf, ctx: ScoringContext) -> list[Any]:
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


# ---------------------------------------------------------------- score + write


class PartWriter:
    """Images, faces and tracks rows of one task, written as Parquet files of about ``target_file_rows`` rows
    (lake_files.write_part_files), plus the run's counts; the driver commits the files' metadata."""

    def __init__(self, ctx: ScoringContext) -> None:
        self.ctx = ctx
        self.images: list[dict[str, Any]] = []
        self.faces: list[dict[str, Any]] = []
        self.tracks: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.counts: Counter = Counter()

    def add(self, image: dict[str, Any], faces: list[dict[str, Any]], tracks: Sequence[dict[str, Any]] = ()) -> None:
        self.images.append(image)
        self.faces.extend(faces)
        self.tracks.extend(tracks)
        self.counts[image["status"]] += 1
        self.counts["n_faces"] += len(faces)
        self.counts["n_tracks"] += len(tracks)
        if image.get("media_type") == "video":
            self.counts["n_videos"] += 1
        for face in faces:  # the run's mix, for the closing summary
            self.counts[f"emotion:{face['emotion']}"] += 1
            self.counts[f"sentiment:{face['sentiment']}"] += 1
        if len(self.images) + len(self.faces) >= self.ctx.target_file_rows:
            self.flush()

    def flush(self) -> None:
        from jobs.campaign.lake_files import write_part_files

        ctx = self.ctx
        for table, rows, schema, uri in (("images", self.images, ctx.images_schema, ctx.images_uri),
                                         ("faces", self.faces, ctx.faces_schema, ctx.faces_uri),
                                         ("tracks", self.tracks, ctx.tracks_schema, ctx.tracks_uri)):
            if rows:
                if not uri:
                    raise ValueError(f"{len(rows)} {table} rows but the ScoringContext names no {table} table")
                for meta in write_part_files(uri, rows, schema, ctx.run_id, ctx.lake_options):
                    self.files.append({"table": table, **meta, "counts": None})
        self.images, self.faces, self.tracks = [], [], []

    @property
    def n_images(self) -> int:
        return sum(self.counts[status] for status in STATUSES)  # not the faces' emotion/sentiment counts

    def metadata(self):
        """One row per written file, and the counts on a row of their own (path null) for the driver to sum."""
        import json

        counts = {"table": "counts", "path": None, "campaign_id": None, "size": 0, "modification_time": 0,
                  "num_records": self.n_images, "stats": None, "counts": json.dumps(dict(self.counts))}
        return pd.DataFrame([*self.files, counts], columns=FILES_COLUMNS)


def score_batches(batches: Iterator[Any], ctx: ScoringContext, meta_columns: list[str],
                  progress: Any = None) -> Iterator[Any]:
    """mapInPandas body: input rows -> Parquet files of images, faces and tracks; yields their metadata rows.

    Per chunk of ``ctx.detect_chunk`` rows: fetch the payloads, score them with the worker's one
    FacePipeline (``score_images``: decode, detect, align, classify, sentiment), turn each
    ImageResult into rows (fer_core.tables.image_rows; a video's tracks: track_rows, from those faces
    rows) and hand them to the writer.
    """
    from fer_core.tables import image_rows, track_rows

    pipe = ctx.pipeline_fn()
    detector_version = pipe.detector.version
    writer = PartWriter(ctx)
    n_seen = 0
    for pdf in batches:
        for start in range(0, len(pdf), ctx.detect_chunk):
            chunk = pdf.iloc[start:start + ctx.detect_chunk]
            if ctx.progress is not None:  # scoring is most of an image's time: count images as they reach it
                ctx.progress.report(n_seen)
                n_seen += len(chunk)
            results = pipe.score_images(fetch_payloads(chunk, ctx))
            scored_at = pd.Timestamp.now(tz="UTC")
            for meta, result in zip(chunk[meta_columns].to_dict("records"), results):
                image, faces = image_rows(result, meta, model_version=ctx.model_version,
                                          detector_version=detector_version, run_id=ctx.run_id, scored_at=scored_at,
                                          sentiment=pipe.sentiment_config, scoring_id=ctx.scoring_id)
                writer.add(image, faces, track_rows(faces, run_id=ctx.run_id))
    writer.flush()
    if progress is not None:
        progress.add(writer.n_images)
    if ctx.progress is not None:
        ctx.progress.report(writer.n_images, final=True)
    yield writer.metadata()


# ---------------------------------------------------------------- the whole plan


def score(todo, ctx: ScoringContext, progress: Any = None):
    """todo (standard input rows) -> DataFrame of file metadata rows (FILES_SCHEMA). Lazy: nothing runs yet.

    ONE mapInPandas pass: every Python node of a Spark stage runs in a Python worker process of its own,
    so one pass means one TensorFlow process per task slot (bench/bench_job.py measured three nodes at
    0.51x a raw loop, with three times the memory).
    """
    meta_columns = [c for c in todo.columns if c not in ("image", "uri")]
    return todo.mapInPandas(lambda batches: score_batches(batches, ctx, meta_columns, progress), FILES_SCHEMA)
