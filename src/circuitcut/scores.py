"""Scores: component scores with their provenance, saved as safetensors + a JSON sidecar.

A :class:`Scores` holds, for one method and one set of reference samples, the *sums* over samples
of per-sample scores and the number of samples, so that partial results merge exactly (sums add,
counts add). The score of a component is ``sum / n_samples`` (the mean of Hatefi et al., Eq. 1).

Keys: ``weight`` scores by linear-layer name, in the weight's own layout; ``neuron`` and ``head``
scores by layer index, one value per unit.

On disk: ``NAME.safetensors`` with tensors ``weight/<name>``, ``neuron/<layer>``, ``head/<layer>``,
and ``NAME.json`` with ``n_samples`` and the provenance (method, rule variant, targets, model id...),
written as one unit (:func:`circuitcut.io.write_pair`).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from circuitcut import validation
from circuitcut.errors import CircuitcutError, MismatchError
from circuitcut.io import read_pair, write_pair

if TYPE_CHECKING:
    from circuitcut.models.adapter import ModelAdapter

FORMAT = "circuitcut.scores/1"


@dataclass
class Scores:
    """Sums of per-sample scores, the sample count, and what produced them."""

    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    n_samples: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_finite()

    def check_finite(self) -> None:
        """Refuse scores holding NaN or infinity (an overflow in half precision, a division by zero):
        they cannot be ranked, so a mask built from them would be arbitrary. Checked when Scores are
        made, loaded, and before a mask is built (:meth:`check_model`)."""
        for key, t in self.tensors().items():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                bad = t[~finite]
                kinds = " and ".join(k for k, hit in (("NaN", bad.isnan().any()), ("infinite", bad.isinf().any()))
                                     if bool(hit))  # fmt: skip
                method = f"{self.meta['method']} " if self.meta.get("method") else ""
                raise CircuitcutError(
                    f"the {method}scores {key!r} hold {bad.numel()} {kinds} value(s) of "
                    f"{t.numel()}; score again (in float32, or with another method): NaN or infinite scores "
                    "cannot be ranked"
                )

    # access ---------------------------------------------------------------------------------------
    def weight(self, name: str) -> torch.Tensor:
        """Mean score of every element of a linear layer's weight."""
        if name not in self.weights:
            raise CircuitcutError(
                f"no weight scores for {name!r}; these Scores have: {', '.join(self.weights) or 'none'}"
            )
        return self.weights[name] / max(1, self.n_samples)

    def neuron(self, layer: int) -> torch.Tensor:
        """Mean score of each MLP neuron of a layer."""
        if layer not in self.neurons:
            raise CircuitcutError(f"no neuron scores for layer {layer}")
        return self.neurons[layer] / max(1, self.n_samples)

    def head(self, layer: int) -> torch.Tensor:
        """Mean score of each attention head of a layer."""
        if layer not in self.heads:
            raise CircuitcutError(f"no head scores for layer {layer}")
        return self.heads[layer] / max(1, self.n_samples)

    def neuron_matrix(self) -> torch.Tensor:
        """All neuron scores as ``[layers, neurons]``."""
        return torch.stack([self.neuron(i).cpu() for i in sorted(self.neurons)])

    def head_matrix(self) -> torch.Tensor:
        """All head scores as ``[layers, heads]``."""
        return torch.stack([self.head(i).cpu() for i in sorted(self.heads)])

    @property
    def levels(self) -> list[str]:
        """The levels present: ``weight``, ``neuron``, ``head``."""
        return [
            lv for lv, d in (("weight", self.weights), ("neuron", self.neurons), ("head", self.heads)) if d
        ]

    # arithmetic -----------------------------------------------------------------------------------
    def merge(self, other: Scores) -> Scores:
        """Combine two partial results over disjoint samples (sums and counts add)."""
        if (
            set(self.weights) != set(other.weights)
            or set(self.neurons) != set(other.neurons)
            or set(self.heads) != set(other.heads)
        ):
            raise CircuitcutError("cannot merge Scores with different components")
        return Scores(
            weights={k: v + other.weights[k].to(v.device) for k, v in self.weights.items()},
            neurons={k: v + other.neurons[k].to(v.device) for k, v in self.neurons.items()},
            heads={k: v + other.heads[k].to(v.device) for k, v in self.heads.items()},
            n_samples=self.n_samples + other.n_samples,
            meta=dict(self.meta),
        )

    def means(self) -> Scores:
        """The same scores with sums replaced by means and ``n_samples`` set to 1."""
        n = max(1, self.n_samples)
        return Scores(
            weights={k: v / n for k, v in self.weights.items()},
            neurons={k: v / n for k, v in self.neurons.items()},
            heads={k: v / n for k, v in self.heads.items()},
            n_samples=1,
            meta={**self.meta, "n_samples_averaged": self.n_samples},
        )

    # io -------------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict as stored on disk."""
        out = {f"weight/{k}": v for k, v in self.weights.items()}
        out.update({f"neuron/{k}": v for k, v in self.neurons.items()})
        out.update({f"head/{k}": v for k, v in self.heads.items()})
        return out

    @staticmethod
    def check_output(path: str | os.PathLike[str], name: str = "output") -> Path:
        """Where :meth:`save` would write, checked before any work (not a folder, writable, and no
        file there that circuitcut did not write as Scores). Returns the ``.safetensors`` path."""
        return validation.output_pair(path, name, FORMAT)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (``.safetensors``) and its JSON sidecar as one unit (:func:`~circuitcut.io.write_pair`:
        atomically, bound by the sidecar's checksum, never over a file circuitcut did not write)."""
        sidecar = {
            "n_samples": self.n_samples,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
            "meta": self.meta,
            "tensors": {k: list(v.shape) for k, v in self.tensors().items()},
        }
        return write_pair(path, self.tensors(), sidecar, FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Scores:
        """Read Scores written by :meth:`save`; refuses a tensors file and a sidecar that are not
        one save (:class:`~circuitcut.errors.MismatchError`)."""
        tensors, side = read_pair(_with_suffix(path), FORMAT)
        scores = cls(n_samples=int(side["n_samples"]), meta=side.get("meta", {}))
        for key, t in tensors.items():
            kind, _, name = key.partition("/")
            if kind == "weight":
                scores.weights[name] = t
            elif kind == "neuron":
                scores.neurons[int(name)] = t
            elif kind == "head":
                scores.heads[int(name)] = t
        scores.check_finite()
        return scores

    # belonging --------------------------------------------------------------------------------------
    def check_model(self, adapter: ModelAdapter) -> None:
        """Refuse scores made for another model before a mask is built from them: the architecture
        recorded at attribution (model type, layers, heads, neurons, head size), where present, and
        the shape of every score tensor (weights, neurons, heads) must be this model's; and refuse
        scores holding NaN or infinity (:meth:`check_finite`)."""
        self.check_finite()
        model = {"model_type": adapter.model_type, "n_layers": adapter.n_layers, "n_heads": adapter.n_heads,
                 "n_neurons": adapter.n_neurons, "head_dim": adapter.head_dim}  # fmt: skip
        for key, have in model.items():
            made_for = self.meta.get(key)
            if made_for is not None and made_for != have:
                raise MismatchError(
                    f"these scores were made for another model ({key} {made_for}; this model has {have}); "
                    "score this model first"
                )
        for kind, store, width in (
            ("neuron", self.neurons, adapter.n_neurons),
            ("head", self.heads, adapter.n_heads),
        ):
            for layer, t in store.items():
                if not 0 <= layer < adapter.n_layers or tuple(t.shape) != (width,):
                    raise MismatchError(
                        f"{kind} scores of layer {layer} have shape {tuple(t.shape)}, but this model has "
                        f"{adapter.n_layers} layers of {width} {kind}s; these scores were made for another model"
                    )
        for name, t in self.weights.items():
            have = adapter.linear(name).shape
            if tuple(t.shape) != have:
                raise MismatchError(
                    f"weight scores of {name} have shape {tuple(t.shape)}, but the weight is {have} (out x in); "
                    "these scores were made for another model"
                )


def _with_suffix(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")


def _versions() -> dict[str, str]:
    import transformers

    import circuitcut

    return {
        "circuitcut": circuitcut.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
