"""The shape of a benchmark in params.yaml: which backbones, methods and datasets it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    #: backbones.<bb>.methods where a backbone runs its own list instead of benchmark.methods
    backbone_methods: dict[str, list[str]] = field(default_factory=dict)
    #: backbones.<bb>.features: the backbone whose extracted features this one reuses
    feature_sources: dict[str, str] = field(default_factory=dict)

    def methods_of(self, backbone: str) -> list[str]:
        return self.backbone_methods.get(backbone, self.methods)

    def features_of(self, backbone: str) -> str:
        """The backbone whose feature folders this one reads (itself unless it shares)."""
        return self.feature_sources.get(backbone, backbone)

    @property
    def all_methods(self) -> list[str]:
        """Every method key some backbone runs, in first-use order."""
        every = [*self.methods, *(m for b in self.backbones for m in self.methods_of(b))]
        return list(dict.fromkeys(every))

    @classmethod
    def of(cls, params: dict[str, Any]) -> Benchmark:
        bench = P.get(params, "benchmark", dict)
        id_train = P.get(params, "benchmark.id_train", str)
        id_val = P.get(params, "benchmark.id_val", str)
        ood = [str(d) for d in P.get(params, "benchmark.ood", list)]
        tune_ood = bench.get("tune_ood")
        used = [id_train, id_val, *ood, *([tune_ood] if tune_ood else [])]
        backbones = [str(b) for b in P.get(params, "benchmark.backbones", list)]
        blocks = {b: (params.get("backbones") or {}).get(b) for b in backbones}
        blocks = {b: block for b, block in blocks.items() if isinstance(block, dict)}
        return cls(
            backbones=backbones,
            methods=[str(m) for m in P.get(params, "benchmark.methods", list)],
            id_train=id_train,
            id_val=id_val,
            ood=ood,
            tune_ood=tune_ood,
            datasets=list(dict.fromkeys(used)),
            backbone_methods={
                b: [str(m) for m in block["methods"]]
                for b, block in blocks.items()
                if isinstance(block.get("methods"), list)
            },
            feature_sources={
                b: str(block["features"]) for b, block in blocks.items() if block.get("features")
            },
        )
