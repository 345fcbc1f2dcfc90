"""Stage ``score``: fit one OOD method on ID train, score ID val and OOD sets, per backbone.

Logits are recomputed from the features and the exported classifier in float32, as
the reference code does, so a probe or a MOS group head scores the same way as a
model's own head. Scores go to ``scores/<bb>/<method>.parquet`` (dataset, index, score).
A method the backbone's classifier cannot serve (``mcm`` without a CLIP text head,
``mos`` without a group head) is skipped: its table holds no rows and says why, and
the report shows the reason instead of stopping the benchmark halfway.

Memory stays bounded: each dataset is read into one array (feature shards only), then
scored in blocks of :data:`BLOCK_ROWS` rows, each block's logits computed and handed to
the detector and its scores written into one float64 output; a method whose scores
depend on the whole dataset (``Detector.per_dataset``) gets the whole set at once. Blocks
are scored from one thread per core the process may use, each with one BLAS thread, and
fits spread fixed row blocks over those threads, so the scores are the same bits for any
thread count (``OODBENCH_THREADS`` overrides it, oodbench/methods/shared/threads.py). The
stage prints one line with its load, fit, score and write seconds. Scores of datasets
whose inputs did not change since an earlier run are reused
(oodbench/results/scorecache.py): a new OOD set costs its own scoring.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oodbench.core import params as P
from oodbench.core.errors import DataError, ParamsError
from oodbench.core.usercode import CodeRef, is_reference
from oodbench.formats.classifier import Linear, load_fc
from oodbench.formats.features import FeatureSet, load_features
from oodbench.formats.paths import fc_path, features_dir, scores_path, subspace_path
from oodbench.formats.scores import save_scores, save_skipped
from oodbench.formats.specs import method_spec, read_spec
from oodbench.methods import Detector, create, errors_of
from oodbench.methods.base import method_of
from oodbench.methods.shared.threads import blas_threads, cpu_threads, limit_blas_threads
from oodbench.results import scorecache
from oodbench.results.fitdata import check_finite, load_fit_data

#: rows per block: the block's float32 logits are 16 MB at C = 1000
BLOCK_ROWS = 4096


class Clock:
    """Seconds spent per phase (load, fit, score, write), summed over its uses."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def line(self) -> str:
        return ", ".join(f"{phase} {s:.2f}s" for phase, s in self.seconds.items())


def detector_from(spec: dict[str, Any], params_file: Path = P.PARAMS_FILE) -> Detector:
    """The detector of a method spec (resolve.py score_spec), with the hyperparameters of
    its block ``methods.<key>`` in params.yaml: the key the stage declares to DVC, so that
    changing them reruns this method's stages and not the check stage. Which method the
    key runs comes from the spec, whose code digest is the stage's dependency: a
    ``method:`` added since the check stage resolved it is refused, not run under
    another method's code digest."""
    key = spec["key"]
    where = f"methods.{key}"
    blocks = P.get(P.read_params_file(params_file), "methods", dict)
    if key not in blocks:  # DVC stops first while the stage declares the key; not by hand
        raise ParamsError(
            f"{params_file}: no {where} block; add one (it may be {{}} for the defaults)"
        )
    block = blocks[key] if blocks[key] is not None else {}  # `maxlogit:` alone: defaults
    name = method_of(key, block)
    if is_reference(name):
        name = str(CodeRef.parse(name, f"{where}.method"))
    if name != spec["method"]:
        raise ParamsError(
            f"{params_file}: {where}.method: {name!r}, but the check stage resolved "
            f"{spec['method']!r} for this key; run `oodbench pipeline` (dvc.yaml then declares "
            "the key to the check stage), then `dvc repro`"
        )
    return create(name, {k: v for k, v in block.items() if k != "method"}, where=where)


@dataclass
class BackboneScores:
    """One backbone's score table of a method, computed, not yet written: the rows of each
    dataset (name, manifest index, scores), or why the method was skipped."""

    out: Path
    rows: list[tuple[str, np.ndarray, np.ndarray]]
    skipped: str | None = None

    def write(self) -> None:
        if self.skipped is not None:
            save_skipped(self.out, self.skipped)
        else:
            save_scores(self.out, self.rows)


def score_stage(method: str, backbones: list[str], child: Callable[[str], list[str]]) -> None:
    """Stage ``pipelines/score-<method>/dvc.yaml:score``: method key `method` on each of
    `backbones`, after checking its hyperparameters (before any data is read).

    The first backbone is scored in this process, each other one in a process of its
    own, started with the command line ``child(backbone)`` (this stage for that backbone
    alone): a fit's last bits may depend on the memory the process allocated before it
    (the alignment of its arrays; measured: RMDS's background covariance on the demo),
    so every backbone is scored after the same steps in a fresh process, whichever
    backbones come before it. A failure stops the stage: the tables of the backbones
    scored before it are new, the others as they were, and a rerun takes the finished
    ones from the score cache."""
    limit_blas_threads()
    settings = read_spec(method_spec(method), f"methods.{method}")
    sources = settings["features"]  # backbone -> the backbone whose features it reads
    for backbone in backbones:
        if backbone not in sources:
            raise ParamsError(
                f"{method_spec(method)}: backbone {backbone!r} does not run methods.{method} "
                "(the check stage resolved it for "
                f"{', '.join(sources) or 'none'}); run `oodbench pipeline`, then `dvc repro`"
            )
    detector_from(settings)
    first, *others = backbones
    score_backbone(first, settings, sources[first]).write()
    for backbone in others:
        done = subprocess.run(child(backbone), check=False)
        if done.returncode != 0:  # its one `error:` line is printed: exit with its code
            raise SystemExit(done.returncode)


def score_method(backbone: str, method: str, features: str | None = None) -> None:
    """One backbone's table of method key `method`: the score stage's work for one
    backbone. `features` names the backbone whose feature folders to read, for an entry
    that shares another's extraction (``backbones.<bb>.features``); by default
    `backbone`'s own."""
    limit_blas_threads()
    settings = read_spec(method_spec(method), f"methods.{method}")
    score_backbone(backbone, settings, features or backbone).write()


def score_backbone(backbone: str, settings: dict[str, Any], source: str) -> BackboneScores:
    """Fit on ID train and score ID val and every OOD set, with `source`'s features and
    `backbone`'s classifier; sets whose inputs did not change come from the score cache."""
    detector = detector_from(settings)  # a fresh one: each backbone fits its own
    method = settings["key"]
    spec = settings["scoring"]  # the datasets (build/specs/scoring.json's copy)
    out = scores_path(backbone, method)
    clock = Clock()
    with clock("load"):
        fc = load_fc(fc_path(backbone))
    reason = detector.unsupported(fc)
    if reason is not None:
        print(f"score {backbone}/{method}: skipped ({reason})", file=sys.stderr)
        return BackboneScores(out, [], skipped=reason)
    names = [spec["id_val"], *spec["ood"]]
    with clock("load"):
        precomputed = subspace_path(backbone) if detector.precomputed else None
        fit = scorecache.fit_key(detector, settings, backbone, source, precomputed)
        entries = {n: scorecache.entry(backbone, method, n, source, fit) for n in names}
        found = {n: scorecache.load(path) for n, path in entries.items()}
    missing = [n for n in names if found[n] is None]
    if missing:  # a new or changed dataset: fit once, score only what changed
        with clock("load"):
            data, val = load_fit_data(
                source,
                detector,
                fc,
                spec["id_train"],
                spec["id_val"],
                spec["one_class"],
                fc_backbone=backbone,
            )
        with clock("fit"), errors_of(detector, "fit"):
            detector.fit(data)
        del data  # the train rows: what the detector keeps of them is its own
        for name in missing:
            with clock("load"):
                if name == spec["id_val"]:
                    features = val
                else:
                    features = load_features(
                        features_dir(source, name), backbone=source, logits=False
                    )
                    check_finite(features)
            with clock("score"), errors_of(detector, f"score on {name!r}"):
                scores = score_set(detector, features, fc)
            found[name] = (features.index, scores)
            with clock("write"):
                scorecache.save(entries[name], features.index, scores)
            del features
    total = sum(len(found[n][1]) for n in names)
    print(
        f"score {backbone}/{method}: {len(names) - len(missing)} sets from cache, "
        f"{len(missing)} scored; {total} samples; {clock.line()}"
    )
    return BackboneScores(out, [(n, *found[n]) for n in names])


def score_set(
    detector: Detector,
    features: FeatureSet,
    fc: Linear,
    block_rows: int | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """The detector's scores of one dataset, checked: one finite float64 per row.

    Row blocks of `block_rows` (default :data:`BLOCK_ROWS`), each with its float32 logits
    ``fc.logits(block)`` (None for a method that does not read them); a ``per_dataset``
    method gets the whole dataset in one call. Blocks are scored from `threads` concurrent
    threads (default: the cores the process may use) unless the detector threads itself
    (``threaded_blocks`` False): the row-wise numpy work of a method is single-threaded
    and would leave the other cores idle. Every block's BLAS calls (its logits first) run
    on one thread however many cores there are, so scores do not depend on them.
    """
    x = features.features
    n = len(x)
    fc.logits(x[:0])  # features and classifier of different backbones: a one-line error
    step = max(n if detector.per_dataset is not None else (block_rows or BLOCK_ROWS), 1)
    scores = np.empty(n, dtype=np.float64)

    def score_block(start: int) -> None:
        block = x[start : start + step]
        logits = fc.logits(block) if detector.reads_logits else None
        raw = detector.score(block, logits)
        try:
            raw = np.asarray(raw, np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(
                f"{detector.params_key}: score() returned {type(raw).__name__} that is not an "
                f"array of numbers on dataset {features.dataset!r} ({err}); return one float "
                "per row"
            ) from None
        if raw.shape != (len(block),):
            raise DataError(
                f"{detector.params_key}: score() returned shape {raw.shape} for {len(block)} "
                f"rows of dataset {features.dataset!r}; it must return one float per row, "
                f"shape ({len(block)},)"
            )
        scores[start : start + len(block)] = raw

    starts = range(0, n, step)
    with blas_threads(1):
        if detector.threaded_blocks and detector.per_dataset is None:
            workers = min(threads or cpu_threads(), len(starts))
            with ThreadPoolExecutor(max(workers, 1)) as pool:
                list(pool.map(score_block, starts))  # list(): re-raises a block's error
        else:
            for start in starts:
                score_block(start)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise DataError(
            f"{detector.params_key} produced {bad.size} NaN/Inf scores on dataset "
            f"{features.dataset!r} ({bad.size} of {n} rows; manifest index "
            f"{features.index[bad[:10]].tolist()}); "
            "check its options in params.yaml or its code (e.g. klm `empty: nan` poisons every score)"
        )
    return scores
