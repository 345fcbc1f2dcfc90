"""SHE (Zhang et al., ICLR 2023): Hopfield-style stored patterns of correctly classified train features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from oodbench.core.errors import DataError
from oodbench.heads.labels import labels_in_head_order
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.logits import classifier_logits, predicted_classes


@register("she")
@dataclass
class SHE(Detector):
    """SHE (Zhang et al., ICLR 2023): inner product with the stored pattern of the prediction.

    The pattern of class c is the mean train feature of the samples labelled c *and*
    predicted c (argmax z); the score of x is <x, pattern[argmax z(x)]>, the
    ``inner_product`` metric of the reference. A class with no correctly classified
    train sample has no pattern: ``empty: zeros`` (default) scores its predictions 0,
    ``empty: nan`` reproduces the reference's mean of nothing (NaN). "Labelled c" is in
    the classifier's class order: a list with named classes is mapped to it by name,
    and its rows of a class the classifier lacks are never correct.
    """

    paper: ClassVar[str] = "Zhang et al., ICLR 2023"

    requires = frozenset({"train", "labels"})

    empty: Literal["zeros", "nan"] = "zeros"

    def _fit(self, data: FitData) -> None:
        train = data.require_train(self.params_key)
        x = np.asarray(train.features, np.float32)
        if not np.any(np.asarray(train.labels) >= 0):
            raise DataError(
                f"{self.params_key} needs labelled ID train features; {train.dataset} has no labels"
            )
        labels = labels_in_head_order(train, data.fc)  # -1 never equals a prediction
        pred = predicted_classes(x, data.fc)
        correct = labels == pred
        classes = data.fc.num_classes
        counts = np.bincount(pred[correct], minlength=classes).astype(np.float64)
        rows = np.flatnonzero(correct)
        from scipy import sparse  # here, not at import: the check stage loads every method

        onehot = sparse.csr_matrix(
            (np.ones(len(rows)), (pred[rows], np.arange(len(rows)))), shape=(classes, len(rows))
        )
        sums = onehot @ x[rows].astype(np.float64)
        fill = 0.0 if self.empty == "zeros" else np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            patterns = np.where(counts[:, None] > 0, sums / counts[:, None], fill)
        self.patterns_ = patterns.astype(np.float32)
        self.empty_classes_ = np.flatnonzero(counts == 0)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        pred = np.argmax(classifier_logits(self.fc_, x, logits), axis=1)
        return np.einsum("nd,nd->n", x, self.patterns_[pred])
