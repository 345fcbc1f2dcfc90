"""Models oodbench builds itself: a user's own nn.Module, torchvision's, OpenOOD's networks.

Every one is wrapped in :class:`ProtocolModel`, which gives extraction and the fc stage
the same contract as a timm model (``features_and_logits``, ``get_classifier``,
``num_features``, ``num_classes``), whichever of three protocols the model follows:

- ``openood``: OpenOOD's network protocol, ``forward(x, return_feature=True)`` returning
  ``(logits, feature)`` and ``get_fc()`` returning ``(W, b)`` (numpy arrays or tensors);
- ``timm``: ``forward_features(x)`` and ``forward_head(features, pre_logits=True)``
  (the feature) / ``forward_head(features)`` (the logits); the head is
  ``get_classifier()`` when the model has one, else the model is headless (``fc: probe``);
- ``plain``: any model whose final layer is an nn.Linear named by ``head:`` (dotted
  attribute path, ``fc`` or ``classifier.1``): the feature is that layer's input, caught
  by a forward pre-hook while ``forward(x)`` computes the logits. torchvision models use
  it with their last nn.Linear by default.

``head:`` chooses ``plain``; otherwise OpenOOD's protocol wins over timm's when a model
has both. The extract stage checks ``features @ W^T + b`` against the model's own
logits on the first batch, as for timm models, so a ``get_fc()`` or a ``head:`` that
is not the model's final linear map stops extraction instead of giving wrong scores.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oodbench.core.errors import ParamsError
from oodbench.core.usercode import CodeRef, describe, load
from oodbench.models.preprocess import input_size
from oodbench.models.weights import convert_state_dict, read_state_dict

PROTOCOLS = ("openood", "timm", "plain")
#: how each protocol's classifier is described in the extract stage's head check
HEAD_OF = {"openood": "get_fc()", "timm": "get_classifier()"}


def build_model(kind: str, cfg: dict[str, Any], checkpoint: Path | None, where: str) -> nn.Module:
    """The eval-mode :class:`ProtocolModel` of a ``model:`` / ``torchvision:`` /
    ``openood:`` block, its checkpoint loaded by tensor name."""
    if kind == "model":
        model = _from_factory(cfg["model"], cfg["num_classes"], where)
    elif kind == "torchvision":
        model = _torchvision(cfg["torchvision"], cfg["num_classes"])
    else:
        from oodbench.models.openood_nets import NETWORKS

        classes = cfg["num_classes"] if cfg["num_classes"] is not None else 1000
        model = NETWORKS[cfg["openood"]](num_classes=classes)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, f"{where}.checkpoint ({checkpoint})", kind)
    model.eval()
    protocol = protocol_of(model, cfg["head"], kind, where)
    return ProtocolModel(model, protocol, cfg["head"], input_size(cfg["preprocess"]), where)


def _from_factory(ref: str, num_classes: int | None, where: str) -> nn.Module:
    """Call the class or function ``path/file.py:Name`` (with ``num_classes`` when set)."""
    here = f"{where}.model"
    root = Path.cwd()  # DVC runs every stage in the project root
    code = CodeRef.parse(ref, here)
    factory = load(code, root, here)
    if not callable(factory):
        raise ParamsError(
            f"params.yaml: {here}: {code.name} in {code.path} is a {type(factory).__name__}, "
            "not callable; name a class or function that returns the nn.Module"
        )
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = factory(**kwargs)
    except Exception as err:  # the user's constructor raised
        raise ParamsError(
            f"{here}: calling {code}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) "
            f"failed: {describe(err, root)}"
        ) from err
    if not isinstance(model, nn.Module):
        raise ParamsError(
            f"params.yaml: {here}: {code}(...) returned a {type(model).__name__}, not a "
            "torch.nn.Module"
        )
    return model


def _torchvision(name: str, num_classes: int | None) -> nn.Module:
    import torchvision.models

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(name, weights=None, **kwargs)


def load_checkpoint(model: nn.Module, path: Path, here: str, kind: str) -> None:
    """Load a state dict by tensor name (one shared prefix such as ``module.`` may be
    dropped), every tensor of the model and no other, shapes checked."""
    target = model.state_dict()
    hint = {
        "model": "check num_classes and that the file is a state dict of this model's class",
        "torchvision": "check the torchvision name and num_classes",
        "openood": "check the network and num_classes (OpenOOD's best.ckpt of this benchmark)",
    }[kind]
    state = convert_state_dict(read_state_dict(path), target, here, hint=hint)
    model.load_state_dict(state, strict=True)


def protocol_of(model: nn.Module, head: str | None, kind: str, where: str) -> str:
    """Which protocol the model follows; one line saying what is missing when none."""
    if head is not None or kind == "torchvision":
        return "plain"
    forward_args = _parameters(model.forward)
    openood = {
        "forward(x, return_feature=...)": "return_feature" in forward_args,
        "get_fc()": callable(getattr(model, "get_fc", None)),
    }
    timm = {
        "forward_features(x)": callable(getattr(model, "forward_features", None)),
        "forward_head(x, pre_logits=...)": "pre_logits"
        in _parameters(getattr(model, "forward_head", None)),
    }
    if all(openood.values()):
        return "openood"
    if all(timm.values()):
        return "timm"
    lacks = lambda found: ", ".join(name for name, ok in found.items() if not ok)  # noqa: E731
    raise ParamsError(
        f"params.yaml: {where}.model: {type(model).__name__} follows none of the protocols: "
        f"OpenOOD's lacks {lacks(openood)}; timm's lacks {lacks(timm)}; or name its final "
        f"nn.Linear with {where}.head (e.g. head: fc) to take that layer's input as the feature"
    )


def _parameters(function: Any) -> set[str]:
    if not callable(function):
        return set()
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        return set()


def final_linear(model: nn.Module, head: str | None, where: str) -> tuple[str, nn.Linear]:
    """The named nn.Linear (``head:``), else the last nn.Linear the model registers."""
    if head is None:
        found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not found:
            raise ParamsError(
                f"params.yaml: {where}: the model has no nn.Linear layer to take the feature "
                "from; its classifier is not linear (use another model)"
            )
        return found[-1]
    try:
        module = model.get_submodule(head)
    except AttributeError as err:
        raise ParamsError(
            f"params.yaml: {where}.head: the model has no submodule {head!r}; its linear "
            f"layers are {linear_names(model) or 'none'}"
        ) from err
    if not isinstance(module, nn.Linear):
        raise ParamsError(
            f"params.yaml: {where}.head: {head!r} is a {type(module).__name__}, not an "
            f"nn.Linear; its linear layers are {linear_names(model) or 'none'}"
        )
    return head, module


def linear_names(model: nn.Module) -> str:
    return ", ".join(name for name, m in model.named_modules() if isinstance(m, nn.Linear))


class ProtocolModel(nn.Module):
    """A model of any protocol behind the contract extraction and the fc stage use."""

    def __init__(
        self, model: nn.Module, protocol: str, head: str | None, size: int, where: str
    ) -> None:
        super().__init__()
        self.model = model
        self.protocol = protocol
        self.where = where
        self.head_name: str | None = None
        self._caught: list[torch.Tensor] = []
        if protocol == "plain":
            self.head_name, linear = final_linear(model, head, where)
            linear.register_forward_pre_hook(self._catch)
        self.head_description = HEAD_OF.get(protocol, f"the nn.Linear {self.head_name!r}")
        with torch.inference_mode():
            feature, logits = self.features_and_logits(torch.zeros(1, 3, size, size))
        self.num_features = int(feature.shape[1])
        self.num_classes = 0 if logits is None else int(logits.shape[1])
        if protocol == "plain" and self.get_classifier().out_features != self.num_classes:
            raise ParamsError(
                f"params.yaml: {where}.head: the nn.Linear {self.head_name!r} has "
                f"{self.get_classifier().out_features} outputs, the model's logits "
                f"{self.num_classes}; name the final nn.Linear (its linear layers: "
                f"{linear_names(model)})"
            )
        if protocol == "openood":
            shape = tuple(self.get_classifier().weight.shape)
            if shape != (self.num_classes, self.num_features):
                raise ParamsError(
                    f"{where}: get_fc() returned W of shape {shape}, but forward(x, "
                    f"return_feature=True) gives {self.num_classes} logits of a "
                    f"{self.num_features}-wide feature; get_fc() must return the classifier "
                    "that maps that feature to those logits"
                )

    def _catch(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._caught.append(args[0])

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the classifier's input [N, D], the model's own logits [N, C] or None)."""
        if self.protocol == "openood":
            out = self.model(x, return_feature=True)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ParamsError(
                    f"{self.where}: forward(x, return_feature=True) returned "
                    f"{type(out).__name__}, not the pair (logits, feature) of OpenOOD's protocol"
                )
            logits, feature = out
        elif self.protocol == "timm":
            pooled = self.model.forward_features(x)
            feature = self.model.forward_head(pooled, pre_logits=True)
            logits = self.model.forward_head(pooled) if self._timm_head() is not None else None
        else:
            self._caught.clear()
            logits = self.model(x)
            if len(self._caught) != 1:
                raise ParamsError(
                    f"{self.where}.head: the nn.Linear {self.head_name!r} ran "
                    f"{len(self._caught)} times in one forward; name the final classifier"
                )
            feature = self._caught.pop()
        return self._checked(feature, "feature"), (
            None if logits is None else self._checked(logits, "logits")
        )

    def _checked(self, value: Any, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.ndim != 2:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ParamsError(
                f"{self.where}: the model's {what} is {shape}, expected a [batch, width] "
                f"tensor ({self.protocol} protocol; docs/backbones.md)"
            )
        return value

    def _timm_head(self) -> nn.Module | None:
        get = getattr(self.model, "get_classifier", None)
        head = get() if callable(get) else None
        return None if head is None or isinstance(head, nn.Identity) else head

    def get_classifier(self) -> nn.Module:
        """The classifier as a module: an nn.Linear (or timm's 1x1 conv), or nn.Identity."""
        if self.protocol == "openood":
            weight, bias = (np.asarray(_numpy(a), np.float32) for a in self.model.get_fc())
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data = torch.from_numpy(weight.copy())
            linear.bias.data = torch.from_numpy(bias.reshape(-1).copy())
            return linear
        if self.protocol == "timm":
            return self._timm_head() or nn.Identity()
        return self.model.get_submodule(self.head_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature, logits = self.features_and_logits(x)
        return feature if logits is None else logits


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
