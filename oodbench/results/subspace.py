"""The ``subspace`` stage: the ViM subspace of ID train, computed once per backbone.

Writes ``features/<bb>/vim_subspace.npz`` (oodbench/methods/shared/subspace.py,
``SubspaceMoments``): origin u = -pinv(W) b, the eigendecomposition of the second moment
of the train features about u, the mean train max-logit and the mean residual norm for
every principal dimension, fingerprinted with the train rows and classifier it comes
from. The vim and residual score stages of <bb> then fit from it without reading train.
"""

from __future__ import annotations

import time

from oodbench.formats.classifier import load_fc
from oodbench.formats.paths import fc_path
from oodbench.formats.specs import read_spec, scoring_spec
from oodbench.methods.shared.subspace import SUBSPACE_FILE, save_moments, subspace_moments
from oodbench.methods.shared.threads import limit_blas_threads
from oodbench.results.fitdata import load_train_rows, precomputed_path, train_fingerprint


def write_subspace(backbone: str, features: str | None = None) -> None:
    """Compute and save the ViM subspace moments of `backbone`'s classifier on ID train
    (the features of `features` for an entry sharing another backbone's extraction)."""
    limit_blas_threads()
    start = time.perf_counter()
    source = features or backbone
    spec = read_spec(scoring_spec(), "benchmark")
    fc = load_fc(fc_path(backbone))
    id_train, one_class = spec["id_train"], spec["one_class"]
    train = load_train_rows(source, id_train, fc, one_class)
    fingerprint = train_fingerprint(source, id_train, one_class, fc)
    loaded = time.perf_counter()
    moments = subspace_moments(train.features, fc, fingerprint)
    out = precomputed_path(backbone, SUBSPACE_FILE)
    save_moments(out, moments)
    print(
        f"subspace {backbone}: {moments.rows} train rows, D={moments.feature_dim} -> {out}; "
        f"load {loaded - start:.2f}s, fit {time.perf_counter() - loaded:.2f}s"
    )
