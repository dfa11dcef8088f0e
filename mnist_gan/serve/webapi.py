"""The requests `mnist-gan serve` answers, free of any web framework: each handler takes the query parameters
and returns a Reply. `mnist_gan.serve.app` maps URLs to these handlers.

    GET  /api/info          the model, its latent directions, the limits below
    GET  /api/samples       seed, n, digit, d (slider values), nice, format=json|png|npz, scale
    GET  /api/walk          the same view, a, b (two of its samples), steps, format, scale
    GET  /api/run           progress, ETA, state, grids, warnings of the run directory
    GET  /api/metrics       since, generation: metrics.jsonl records as the run appends them
    GET  /api/run/grid.png  iteration: a sample grid the run wrote (default: the newest)
    POST /api/reload        load the run's newest checkpoint

Every parameter is bounded by a named constant; a bad one is a 4xx with one line of explanation.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnist_gan.errors import MnistGanError

logger = logging.getLogger(__name__)

DEFAULT_SAMPLES = 16
MAX_SAMPLES = 64  # an 8x8 grid: the most a page shows, and still a slider move well within 100 ms on 2 cores
MAX_SEED = 2**31 - 1  # exact in JavaScript's numbers and accepted by torch.Generator
SLIDER_LIMIT = 4.0  # prior standard deviations along a direction; G saw almost no z further out than this
DEFAULT_STEPS = 9
MAX_STEPS = 16  # frames of a walk between two samples: a smooth strip that still fits on the page
DEFAULT_SCALE = 4  # downloaded PNGs are enlarged so that a grid is readable when opened
MAX_SCALE = 8  # an 8x8 grid at 8x is ~1,900 px square
MAX_VALUE_CHARS = 200  # characters in one query value: room for every slider value, no room for mischief
LOAD_ATTEMPTS = 3  # listings of checkpoints/ tried while a training run rotates them under the reader
MAX_GRID_ITERATION = 10**12  # iterations in a grid's file name have at most 12 digits (run.directory.GRID_NAME)


class BadRequest(Exception):
    """A request the page would not send: answered with `status` and the message, never a traceback."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Reply:
    body: bytes
    media_type: str = "application/json"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(payload: dict, status: int = 200) -> Reply:
    return Reply(json.dumps(payload, allow_nan=False).encode(), status=status)


class Query:
    """A request's query parameters: unknown or repeated ones refused, each value parsed strictly within bounds."""

    def __init__(self, items: list[tuple[str, str]], allowed: tuple[str, ...]):
        self.values: dict[str, str] = {}
        for key, value in items:
            if key not in allowed:
                raise BadRequest(f"unknown parameter {key[:40]!r}; this request takes: {', '.join(allowed) or 'none'}")
            if key in self.values:
                raise BadRequest(f"parameter {key!r} is given twice")
            if len(value) > MAX_VALUE_CHARS:
                raise BadRequest(f"parameter {key!r} is longer than {MAX_VALUE_CHARS} characters")
            self.values[key] = value

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = self.values.get(name, "")
        if raw == "":
            return default
        if not re.fullmatch(r"-?\d{1,13}", raw) or not low <= int(raw) <= high:
            raise BadRequest(f"{name} must be a whole number in {low}..{high}, got {raw[:40]!r}")
        return int(raw)

    def numbers(self, name: str, count: int, limit: float) -> tuple[float, ...]:
        raw = self.values.get(name, "")
        parts = raw.split(",") if raw else []
        if len(parts) > count:
            raise BadRequest(f"{name} takes at most {count} comma-separated values, got {len(parts)}")
        try:
            values = tuple(float(part) for part in parts)
        except ValueError:
            raise BadRequest(f"{name} must be comma-separated numbers, got {raw[:40]!r}") from None
        if not all(math.isfinite(v) and -limit <= v <= limit for v in values):
            raise BadRequest(f"each {name} value must be in -{limit:g}..{limit:g}, got {raw[:40]!r}")
        return values

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.values.get(name, "") or default
        if raw not in choices:
            raise BadRequest(f"{name} must be one of {', '.join(choices)}, got {raw[:40]!r}")
        return raw


def encode_samples(samples, fmt: str, nrow: int, scale: int, name: str, extra: dict) -> Reply:
    """Samples as the page's JSON (raw uint8 pixels, base64, channel after channel), a PNG grid or an npz file
    to download; pixels and npz 'images' exactly as `generate` writes them, in colour for a 3-channel G."""
    from mnist_gan.data.images import to_uint8
    from mnist_gan.sampling.grids import grid_image

    pixels = to_uint8(samples.images)  # (N, 28, 28), or (N, 3, 28, 28) in colour
    # 6 places: an LSGAN D's outputs for a young G's samples sit within a few hundredths of each other
    scores = None if samples.scores is None else [round(float(s), 6) for s in samples.scores]
    labels = None if samples.labels is None else [int(v) for v in samples.labels]
    if fmt == "png":
        from PIL import Image

        grid = grid_image(samples.images, nrow=nrow)
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
        return Reply(buffer.getvalue(), "image/png", headers={"Content-Disposition": f'attachment; filename="{name}.png"'})
    if fmt == "npz":
        import numpy as np

        arrays = {"images": pixels.numpy()}  # uint8 under 'images', as `generate --format npz` writes
        arrays.update({key: np.asarray(value) for key, value in (("scores", scores), ("labels", labels)) if value})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return Reply(buffer.getvalue(), "application/octet-stream",
                     headers={"Content-Disposition": f'attachment; filename="{name}.npz"'})
    channels = pixels.shape[1] if pixels.dim() == 4 else 1
    return json_reply({"n": len(pixels), "nrow": nrow, "channels": channels,
                       "images": base64.b64encode(pixels.numpy().tobytes()).decode(),
                       "scores": scores, "labels": labels, **extra})


def _loss_name(path: Path) -> str | None:
    """The loss the run that wrote `path` trained with (how D's output reads as a score), from its config.json."""
    from mnist_gan.run.directory import RunDir

    try:
        loss = RunDir.containing(path).config_dict()["train"]["loss"]
    except (KeyError, TypeError):
        return None
    return loss if isinstance(loss, str) else None  # a hand-edited config.json may hold any JSON there


def _class_names(path: Path, model_config) -> list[str]:
    """The names of the generator's classes: its data set's (Fashion-MNIST's "Sneaker"), else "0", "1", ..."""
    from mnist_gan.run.classes import class_names_of

    return class_names_of(path, model_config)


def load_explorer(path: Path):
    """An Explorer of the generator in a checkpoint, run directory or generator.safetensors."""
    from mnist_gan.run.checkpoint import load_generator
    from mnist_gan.serve.explorer import Explorer

    model_config, G, D = load_generator(path)
    logger.info(f"finding the latent directions of {path.name}")
    return Explorer(model_config, G, D, _loss_name(path))


def load_newest(run_dir: Path):
    """(Explorer, iteration) of the newest checkpoint of a run that loads; (None, None) before the first one.
    A training run may rotate a checkpoint away between listing and loading: then the folder is listed again."""
    from mnist_gan.run.directory import RunDir

    run = RunDir(run_dir)
    for _ in range(LOAD_ATTEMPTS):
        listing = run.checkpoints_by_iteration()
        for iteration, path in sorted(listing.items(), reverse=True):
            try:
                return load_explorer(path), iteration
            except MnistGanError as error:
                if path.exists():  # damaged rather than rotated away: say so, and try an older one
                    logger.warning(f"skipping {path.name}: {error}")
        if not listing:
            break
    if run.generator.is_file():
        return load_explorer(run.generator), None
    return None, None


class Api:
    """The page's requests, for one run directory (Explore and Watch) or one generator file (Explore)."""

    def __init__(self, source: str | Path, refresh: float = 2.0):
        from mnist_gan.run.directory import RunDir
        from mnist_gan.run.watch import RunWatcher

        self.source, self.refresh = Path(source), refresh
        if not self.source.exists():
            raise MnistGanError(f"{self.source}: no such run directory or checkpoint")
        self.watcher = None
        if self.source.is_dir():
            run = RunDir(self.source)
            if not any(path.exists() for path in (run.config_file, run.metrics, run.checkpoints)):
                raise MnistGanError(f"{self.source}: not a run directory (no config.json, metrics.jsonl or checkpoints/)")
            self.watcher = RunWatcher(self.source)
            self.explorer, self.iteration = load_newest(self.source)
        else:
            self.explorer, self.iteration = load_explorer(self.source), None
        self._model_lock = threading.Lock()  # one rendering at a time: 2 cores gain nothing from running two

    def handle(self, name: str, items: list[tuple[str, str]]) -> Reply:
        """Answer request `name` (a method below); every failure becomes a 4xx/5xx reply with one line."""
        try:
            return getattr(self, name)(items)
        except BadRequest as error:
            return json_reply({"error": str(error)}, error.status)
        except MnistGanError as error:
            return json_reply({"error": str(error)}, 400)
        except Exception as error:  # a bug: say what broke in one line; the page must never see a traceback
            logger.error(f"error answering {name}: {type(error).__name__}: {error}")
            logger.debug(f"the traceback of that error (request {name}):", exc_info=error)
            return json_reply({"error": f"internal error ({type(error).__name__})"}, 500)

    def _need_explorer(self):
        if self.explorer is None:
            raise BadRequest("no checkpoint yet: the run writes its first one every --checkpoint-every iterations; "
                             "reload when it has", 409)
        return self.explorer

    def _need_run(self):
        if self.watcher is None:
            raise BadRequest(f"{self.source.name} is a single file, not a run directory: there is no run to watch", 404)
        return self.watcher

    def info(self, items) -> Reply:
        Query(items, ())
        explorer = self.explorer
        model = None if explorer is None else {
            **{key: value for key, value in asdict(explorer.model_config).items()
               if key in ("architecture", "z_dim", "z_distribution", "conditional", "num_classes", "width")},
            "class_names": _class_names(self.source, explorer.model_config),
            "has_d": explorer.D is not None, "score_note": explorer.score_note, "layer": explorer.directions.layer,
            "directions": [round(share, 4) for share in explorer.directions.explained]}
        limits = {"max_samples": MAX_SAMPLES, "max_seed": MAX_SEED, "slider": SLIDER_LIMIT, "max_steps": MAX_STEPS,
                  "default_samples": DEFAULT_SAMPLES, "default_steps": DEFAULT_STEPS, "max_scale": MAX_SCALE}
        from mnist_gan.sampling.sample import NICE_FACTOR

        return json_reply({"source": str(self.source), "name": self.source.resolve().name, "model": model,
                           "iteration": self.iteration, "run": self.watcher is not None,
                           "refresh_s": self.refresh, "nice_factor": NICE_FACTOR, "limits": limits})

    def _view(self, query: Query):
        from mnist_gan.serve.explorer import View

        explorer = self._need_explorer()
        digit = query.values.get("digit", "all")
        if digit not in ("", "all"):
            if not explorer.model_config.conditional:
                raise BadRequest("digit needs a conditional model (trained with --conditional); this one is not")
            digit = query.integer("digit", None, 0, explorer.model_config.num_classes - 1)
        return explorer, View(seed=query.integer("seed", 0, 0, MAX_SEED),
                              n=query.integer("n", DEFAULT_SAMPLES, 1, MAX_SAMPLES),
                              digit=None if digit in ("", "all") else digit,
                              shifts=query.numbers("d", len(explorer.directions.vectors), SLIDER_LIMIT))

    def draw_samples(self, items) -> Reply:
        query = Query(items, ("seed", "n", "digit", "d", "nice", "format", "scale"))
        explorer, view = self._view(query)
        nice = query.choice("nice", "0", ("0", "1")) == "1"
        fmt, scale = query.choice("format", "json", ("json", "png", "npz")), query.integer("scale", DEFAULT_SCALE, 1, MAX_SCALE)
        if nice and explorer.D is None:
            raise BadRequest("the nice view ranks samples with D, and this file holds only G: serve a run "
                             "directory or a .ckpt instead", 409)
        start = time.perf_counter()
        with self._model_lock:
            samples = explorer.nice(view) if nice else explorer.render(view)
        name = f"mnist-gan-seed{view.seed}-n{view.n}" + (f"-digit{view.digit}" if view.digit is not None else "") + \
            ("-nice" if nice else "")
        return encode_samples(samples, fmt, math.ceil(math.sqrt(view.n)), scale, name,
                              {"ms": round(1000 * (time.perf_counter() - start), 1), "nice": nice})

    def walk(self, items) -> Reply:
        query = Query(items, ("seed", "n", "digit", "d", "a", "b", "steps", "format", "scale"))
        explorer, view = self._view(query)
        first, last = query.integer("a", 0, 0, MAX_SAMPLES - 1), query.integer("b", 1, 0, MAX_SAMPLES - 1)
        steps = query.integer("steps", DEFAULT_STEPS, 2, MAX_STEPS)
        fmt, scale = query.choice("format", "json", ("json", "png", "npz")), query.integer("scale", DEFAULT_SCALE, 1, MAX_SCALE)
        start = time.perf_counter()
        with self._model_lock:
            samples = explorer.walk(view, first, last, steps)
        return encode_samples(samples, fmt, steps, scale, f"mnist-gan-walk-seed{view.seed}-{first}-{last}",
                              {"ms": round(1000 * (time.perf_counter() - start), 1)})

    def run(self, items) -> Reply:
        Query(items, ())
        return json_reply({**self._need_run().status(), "loaded_iteration": self.iteration})

    def metrics(self, items) -> Reply:
        query = Query(items, ("since", "generation"))
        watcher = self._need_run()
        return json_reply(watcher.metrics.since(query.integer("since", 0, 0, 10**12),
                                                query.integer("generation", None, 0, 10**12)))

    def run_grid(self, items) -> Reply:
        query = Query(items, ("iteration",))
        found = self._need_run().grid_bytes(query.integer("iteration", None, 0, MAX_GRID_ITERATION))
        if found is None:
            raise BadRequest("no sample grid at that iteration (yet)", 404)
        return Reply(found[1], "image/png", headers={"X-Iteration": str(found[0])})

    def reload(self, items) -> Reply:
        Query(items, ())
        explorer, iteration = load_newest(self._need_run().run_dir)  # slow part outside the lock: pages keep working
        if explorer is None:
            raise BadRequest("no checkpoint yet: nothing to load", 409)
        with self._model_lock:
            self.explorer, self.iteration = explorer, iteration
        return self.info([])
