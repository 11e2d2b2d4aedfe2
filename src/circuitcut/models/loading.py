"""Loading a causal LM, its tokenizer and its adapter from a hub id, a local directory or an alias."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
import transformers
from packaging.version import Version
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from circuitcut import validation
from circuitcut.encoding import Encoder, as_encoder
from circuitcut.errors import ModelLoadError, UnsupportedModelError
from circuitcut.models.adapter import ModelAdapter, get_adapter
from circuitcut.models.options import ModelOptions
from circuitcut.models.specs import SPECS, supported_model_types
from circuitcut.zoo.registry import alias_path

GGUF_SUFFIX = ".gguf"
#: weight files that are pickles (torch.save / PyTorch checkpoints)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
# from_pretrained takes `dtype` from transformers 4.56 on (huggingface/transformers PR 39782) and warns on
# `torch_dtype` there; older 4.5x releases know only `torch_dtype`
_DTYPE_KW = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Turn ``"bf16"``, ``"float32"``... into a torch dtype (``None`` and ``"auto"`` pass through)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """Map a reference-model alias (``circuitcut/ref-llama``) to its packaged directory.

    A ``.gguf`` file is returned as it is. Anything else is returned unchanged. A string that looks
    like a filesystem path (absolute, starting with ``.`` or ``~``) and does not exist raises
    :class:`ModelLoadError`.
    """
    name = str(name_or_path)
    packaged = alias_path(name)
    if packaged is not None:
        return str(packaged)
    expanded = os.path.expanduser(name)
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if os.path.isdir(expanded) or (os.path.isfile(expanded) and expanded.endswith(GGUF_SUFFIX)):
        return expanded
    if looks_local or os.path.exists(expanded):
        raise ModelLoadError(
            f"model {name!r} is neither a directory nor a .gguf file (or does not exist); pass a "
            "folder written by save_pretrained, a .gguf file, a reference-model alias such as "
            "circuitcut/ref-llama, or a hub id"
        )
    return name


def locate(name_or_path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)`` for a model argument.

    A ``.gguf`` path, or a folder holding exactly one ``.gguf`` file and no ``config.json``, is read
    through transformers' GGUF support; a folder with several ``.gguf`` files must be named by file.
    """
    path = resolve_model_path(name_or_path)
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        ggufs = sorted(f for f in os.listdir(path) if f.endswith(GGUF_SUFFIX))
        if len(ggufs) > 1:
            raise ModelLoadError(
                f"{name_or_path!r} holds {len(ggufs)} .gguf files ({', '.join(ggufs)}); pass the one "
                "to load as the model path"
            )
        if ggufs:
            return path, ggufs[0]
    return path, None


def _check_gguf_support(name: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(
            f"reading {name!r} needs the 'gguf' package: pip install 'circuitcut[gguf]' (or pip install gguf)"
        )


def _refuse_pickle(folder: str, name: str) -> None:
    """A local folder whose only weights are pickle checkpoints is refused (loading one runs the
    unpickler on a file the user handed in)."""
    if not os.path.isdir(folder):
        return
    files = os.listdir(folder)
    if any(f.endswith(".safetensors") for f in files):
        return
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise ModelLoadError(
            f"{name!r} holds only pickle checkpoints ({', '.join(pickles)}); circuitcut loads "
            "safetensors only. Convert the folder once (load it with transformers where you trust "
            "the file and call save_pretrained, which writes model.safetensors), or pass "
            "allow_pickle=True / --allow-pickle, which unpickles the file: only for files you trust"
        )


def _drop_gguf_quantizer(model: torch.nn.Module) -> None:
    """A GGUF model is dequantized to plain float tensors on load, but transformers 5 keeps a GGUF
    quantizer on it that makes ``save_pretrained`` refuse to write it; nothing quantized remains, so
    the quantizer and its config entry are removed."""
    quantizer = getattr(model, "hf_quantizer", None)
    if (
        quantizer is not None
        and "gguf" in str(getattr(quantizer.quantization_config, "quant_method", "")).lower()
    ):
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if getattr(model, "is_quantized", False) and "is_quantized" in vars(model):
            model.is_quantized = False


def load_config(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    """Load and check a model's config: it must be a causal LM of a supported family."""
    path, gguf = locate(name_or_path)
    extra = {}
    if gguf is not None:
        _check_gguf_support(str(name_or_path))
        extra["gguf_file"] = gguf
    try:
        config = AutoConfig.from_pretrained(
            path, trust_remote_code=trust_remote_code, revision=revision, **extra
        )
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        hint = (
            "it is not a local directory and the hub is unreachable (offline mode); download it "
            "elsewhere and pass the local folder"
            if offline or not Path(path).exists()
            else "the folder has no valid config.json"
        )
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {hint} ({exc})") from exc
    model_type = getattr(config, "model_type", None)
    if model_type not in SPECS:
        causal = type(config) in AutoModelForCausalLM._model_mapping
        # encoders (BERT, RoBERTa...) have a causal head only when configured as decoders
        encoder = type(config) in AutoModelForMaskedLM._model_mapping and not getattr(
            config, "is_decoder", False
        )
        if not causal or encoder:
            raise ModelLoadError(
                f"{name_or_path!r} is a {model_type!r} model, not a causal language model; "
                "circuitcut works on decoder-only LMs (AutoModelForCausalLM)"
            )
        raise UnsupportedModelError(
            f"unsupported model type {model_type!r}; circuitcut supports: "
            f"{', '.join(supported_model_types())}"
        )
    return config


def load_model(
    name_or_path: str | os.PathLike[str],
    options: ModelOptions | None = None,
    *,
    device_map: str | dict[str, Any] | None = None,
    progress: bool = True,
    **changes: Any,
) -> tuple[torch.nn.Module, Any, ModelAdapter]:
    """Load a causal LM, its tokenizer and its adapter.

    Args:
        name_or_path: a local directory written by ``save_pretrained``, a ``.gguf`` file (or a
            folder holding one; dequantized to the options' dtype, needs the ``gguf`` package), a
            reference-model alias (``circuitcut/ref-llama``, ``circuitcut/ref-opt``) or a hub id
            (needs network).
        options: revision, dtype, device, allow_pickle and trust_remote_code (see
            :class:`~circuitcut.models.ModelOptions`; default: its defaults). ``allow_pickle`` is off
            by default because unpickling runs code from the file: only for files you trust.
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``) to spread a large model; the
            options' device is then ignored.
        progress: show transformers' weight-loading bars (its GGUF dequantization shows its own bar
            either way: transformers gives no switch for it).
        **changes: single options by name, as a shorthand: ``load_model(path, dtype="bf16")`` is
            ``load_model(path, ModelOptions(dtype="bf16"))``; applied over ``options``.

    Returns:
        ``(model, tokenizer, adapter)``; the model is in eval mode; ``tokenizer`` is the plain
        tokenizer (``None`` when the directory has none); :func:`as_loaded` gives it as an Encoder
        with the options' special-token policy.
    """
    opts = (options or ModelOptions()).with_changes(**changes)
    device, trust_remote_code, revision = opts.device, opts.trust_remote_code, opts.revision
    if device is not None and device_map is None:  # before any loading: a device that exists here
        device = validation.device(device)
    config = load_config(str(name_or_path), trust_remote_code, revision)
    path, gguf = locate(name_or_path)
    kwargs: dict[str, Any] = {
        "trust_remote_code": trust_remote_code,
        "revision": revision,
        "config": config,
    }
    tok_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if gguf is not None:
        kwargs["gguf_file"] = tok_kwargs["gguf_file"] = gguf
    elif not opts.allow_pickle:
        _refuse_pickle(path, str(name_or_path))
        kwargs["use_safetensors"] = True
    torch_dtype = resolve_dtype(opts.dtype)
    kwargs[_DTYPE_KW] = torch_dtype if torch_dtype else "auto"
    if device_map is not None:
        kwargs["device_map"] = device_map
    bars = transformers.utils.logging.is_progress_bar_enabled()
    if not progress:
        transformers.utils.logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except SafetensorError as exc:
        raise ModelLoadError(
            f"the weights of {name_or_path!r} are damaged or truncated ({exc}); download or save them again"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load weights of {name_or_path!r}: {exc}") from exc
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    _drop_gguf_quantizer(model)
    if device is not None and device_map is None:
        model.to(device)
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **tok_kwargs)
    except (OSError, ValueError, TypeError, ImportError) as exc:  # 4.5x: no tokenizer files -> ImportError
        log.warning("no tokenizer loaded for %s: %s", name_or_path, exc)
        tokenizer = None
    return model, tokenizer, get_adapter(model)


def as_loaded(
    model: str | os.PathLike[str] | torch.nn.Module,
    tokenizer: Any = None,
    purpose: str = "this workflow",
    options: ModelOptions | None = None,
) -> tuple[torch.nn.Module, Encoder, ModelAdapter, str]:
    """``(model, encoder, adapter, model_id)`` from a name/path/alias or an already-loaded model
    (whose tokenizer, or :class:`~circuitcut.encoding.Encoder`, must then be given); workflows accept
    either. A name is loaded with ``options`` (:class:`~circuitcut.models.ModelOptions`). The
    tokenizer comes back as an Encoder carrying the model's context length and the special-token
    policy: ``options.special_tokens`` when options are given, else a given Encoder's choice, else on."""
    if isinstance(model, (str, os.PathLike)):
        loaded, tok, adapter = load_model(model, options)
        model_id = str(model)
    else:
        loaded, tok, adapter = model, tokenizer, get_adapter(model)
        model_id = getattr(model.config, "_name_or_path", "")
    if tok is None:
        raise ModelLoadError(f"{purpose} needs the model's tokenizer; none was found or given")
    special_tokens = options.special_tokens if options is not None else None
    return loaded, as_encoder(tok, loaded, special_tokens), adapter, model_id
