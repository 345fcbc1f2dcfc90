"""KL-Matching (Hendrycks et al., ICML 2022): distance of the softmax to per-class templates.

Score = -min_c KL(p || q_c), with q_c the mean softmax of the train samples predicted
as c (or, MOS style, of the ID val samples labelled c). The pairwise KL over all
(sample, class) pairs is vectorised as

    KL(p || q_c) = sum_j p_j log p_j - p . log q_c        (0 log 0 = 0)

where the cross term is one matrix product per block of rows. A template with
q_cj = 0 where p_j > 0 gives KL = +inf exactly as the reference's per-pair formula;
those pairs are found with a second, small product over just the columns where some
template is 0, because 0 * log 0 inside a matrix product would be NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.logits import softmax_block
from oodbench.methods.shared.threads import ordered_map

#: rows per block: [rows, C] float64 probabilities and KL values, ~30 MB each at C=1000
CHUNK_ROWS = 4096


def softmax32(logits: np.ndarray) -> np.ndarray:
    """softmax in float32, as the reference computes it from float32 logits."""
    return softmax_block(np.asarray(logits, dtype=np.float32))


def template_sums(
    features: np.ndarray, fc: Linear, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums of softmax rows (float64 [C, C]) and counts, grouped by `labels`
    or, when None, by the predicted class (argmax of the softmax). Blocks of rows run in
    a thread pool and are summed in block order (oodbench/methods/shared/threads.py)."""
    from scipy import sparse  # here, not at import: the check stage loads every method

    c = fc.num_classes

    def block_sums(start: int) -> tuple[np.ndarray, np.ndarray]:
        p = softmax32(fc.logits(np.asarray(features[start : start + CHUNK_ROWS])))
        group = p.argmax(axis=1) if labels is None else labels[start : start + len(p)]
        onehot = sparse.csr_matrix((np.ones(len(p)), (group, np.arange(len(p)))), shape=(c, len(p)))
        return onehot @ p.astype(np.float64), np.bincount(group, minlength=c)

    sums = np.zeros((c, c), dtype=np.float64)
    counts = np.zeros(c, dtype=np.int64)
    for block_sum, block_counts in ordered_map(block_sums, range(0, len(features), CHUNK_ROWS)):
        sums += block_sum
        counts += block_counts
    return sums, counts


@dataclass(frozen=True)
class Templates:
    """log q with 0 where q = 0, and the q = 0 pattern on the columns where it occurs."""

    log_q: np.ndarray  # float64 [C, C]; NaN rows stay NaN
    zero_cols: np.ndarray  # columns j where some q_cj == 0
    zero_q: np.ndarray  # float64 [C, len(zero_cols)], 1 where q_cj == 0

    @classmethod
    def of(cls, templates: np.ndarray) -> Templates:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_q = np.log(templates)
        zero_q = templates == 0
        log_q[zero_q] = 0.0  # those pairs are set to +inf in kl_min where p_j > 0
        zero_cols = np.flatnonzero(zero_q.any(axis=0))
        return cls(log_q, zero_cols, zero_q[:, zero_cols].astype(np.float64))


def kl_min(logits: np.ndarray, templates: Templates) -> np.ndarray:
    """min_c KL(softmax(z) || q_c) per row of z, the softmax in float32 one block of rows at
    a time; NaN templates give NaN (np.min propagates it)."""
    log_q, zero_cols, zero_q = templates.log_q, templates.zero_cols, templates.zero_q
    out = np.empty(len(logits), dtype=np.float64)
    for start in range(0, len(logits), CHUNK_ROWS):
        p = softmax32(logits[start : start + CHUNK_ROWS]).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            neg_entropy = np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        kl = neg_entropy[:, None] - p @ log_q.T
        if zero_cols.size:
            kl[((p[:, zero_cols] > 0).astype(np.float64) @ zero_q.T) > 0] = np.inf
        out[start : start + len(p)] = kl.min(axis=1)
    return out


@register("klm")
@dataclass
class KLMatching(Detector):
    """-min_c KL(softmax(z) || q_c).

    ``templates``: ``train_predicted`` (default, ViM/MOODv2: q_c = mean softmax over the
    train samples whose argmax is c) or ``val_labels`` (MOS: grouped by the true label
    of the ID val samples). ``empty`` (a class no sample falls into): ``zeros``
    (default, MOODv2: the template is 0, its KL is +inf and it never wins) or ``nan``
    (ViM HEAD: a NaN template, which makes every score NaN; the score stage then stops).
    ``requires`` lists val because ``val_labels`` reads it; the default only uses train.
    """

    paper: ClassVar[str] = "Hendrycks et al., ICML 2022"
    reference: ClassVar[str] = "https://github.com/haoqiwang/vim"
    requires = frozenset({"train", "val"})

    empty: Literal["zeros", "nan"] = "zeros"
    templates: Literal["train_predicted", "val_labels"] = "train_predicted"

    def _fit(self, data: FitData) -> None:
        if self.templates == "val_labels":
            val = data.require_val(self.params_key)
            labels = np.asarray(val.labels, dtype=np.int64)
            c = data.fc.num_classes
            if ((labels < 0) | (labels >= c)).any():
                raise DataError(
                    f"{self.params_key} with templates val_labels needs a label in [0, {c}) "
                    f"for every ID val row ({val.dataset!r} has rows without one)"
                )
            sums, counts = template_sums(val.features, data.fc, labels)
        else:
            train = data.require_train(self.params_key)
            sums, counts = template_sums(train.features, data.fc, None)
        if counts.sum() == 0:
            raise DataError(f"{self.params_key}: no rows to build the KL templates from")
        fill = 0.0 if self.empty == "zeros" else np.nan
        self.templates_ = np.full_like(sums, fill)
        seen = counts > 0
        self.templates_[seen] = sums[seen] / counts[seen, None]
        self.empty_classes_ = np.flatnonzero(~seen)
        self.prepared_ = Templates.of(self.templates_)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return -kl_min(logits, self.prepared_)
