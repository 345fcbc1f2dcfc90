"""The shape of a benchmark in params.yaml: which backbones, methods and datasets it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oodbench.core import params as P


@dataclass(frozen=True)
class Benchmark:
    """The parts of params.yaml the pipeline's shape follows (validated by the check stage)."""

    backbones: list[str]
    methods: list[str]
    id_train: str
    id_val: str
    ood: list[str]
    tune_ood: str | None
    datasets: list[str]  # every dataset a stage reads, in first-use order

    @classmethod
    def of(cls, params: dict[str, Any]) -> Benchmark:
        bench = P.get(params, "benchmark", dict)
        id_train = P.get(params, "benchmark.id_train", str)
        id_val = P.get(params, "benchmark.id_val", str)
        ood = [str(d) for d in P.get(params, "benchmark.ood", list)]
        tune_ood = bench.get("tune_ood")
        used = [id_train, id_val, *ood, *([tune_ood] if tune_ood else [])]
        return cls(
            backbones=[str(b) for b in P.get(params, "benchmark.backbones", list)],
            methods=[str(m) for m in P.get(params, "benchmark.methods", list)],
            id_train=id_train,
            id_val=id_val,
            ood=ood,
            tune_ood=tune_ood,
            datasets=list(dict.fromkeys(used)),
        )
