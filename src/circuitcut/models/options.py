"""How a model is loaded: the one set of options every verb and workflow that loads a model takes.

Torch-free, so the command line can build and check it before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from circuitcut.errors import InputError, ModelLoadError

#: weight dtypes by name; ``auto`` keeps the dtype the checkpoint was saved in
DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto")


@dataclass(frozen=True)
class ModelOptions:
    """Options for loading a model (:func:`~circuitcut.models.load_model` and the workflows).

    Attributes:
        revision: hub revision (branch, tag or commit); ``None`` for the default branch.
        dtype: weight dtype: ``float32`` (default), ``bf16``/``bfloat16``, ``fp16``/``float16``, or
            ``auto`` (as saved). A ``torch.dtype`` of one of these is accepted and stored by name.
        device: where to put the model (``cpu``, ``cuda``, ``cuda:1``, ``mps``); ``None`` leaves it
            where transformers loads it (the CPU). Checked against this machine when loading.
        allow_pickle: accept a checkpoint stored only as pickle (``pytorch_model.bin``); unpickling
            runs code from the file, so only for files you trust.
        trust_remote_code: allow custom modelling code from the model's repository.
        special_tokens: put the tokenizer's leading special tokens (a BOS where it adds one) before
            prompts and windows; the workflows' :class:`~circuitcut.encoding.Encoder` follows it
            (:func:`~circuitcut.models.load_model` itself returns the plain tokenizer).
    """

    revision: str | None = None
    dtype: str = "float32"
    device: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    special_tokens: bool = True

    def __post_init__(self) -> None:
        dtype = self.dtype
        if (
            type(dtype).__module__ == "torch"
        ):  # a torch.dtype: stored by its name (torch.bfloat16 -> bfloat16)
            dtype = str(dtype).removeprefix("torch.")
        if dtype is None:
            dtype = "auto"
        if dtype not in DTYPES:
            raise ModelLoadError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        object.__setattr__(self, "dtype", dtype)
        if self.device is not None:
            object.__setattr__(self, "device", str(self.device))  # a torch.device is kept by name
        if self.revision is not None and not isinstance(self.revision, str):
            raise InputError(f"revision {self.revision!r} is not a branch, tag or commit name; give a string")
        for flag in ("allow_pickle", "trust_remote_code", "special_tokens"):
            if not isinstance(getattr(self, flag), bool):
                raise InputError(f"{flag} must be True or False, got {getattr(self, flag)!r}")

    def with_changes(self, **changes: Any) -> ModelOptions:
        """A copy with some fields changed; an unknown field name is refused with the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(
                f"unknown model option(s) {', '.join(unknown)}; the options are {', '.join(sorted(known))}"
            )
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (for provenance)."""
        return asdict(self)
