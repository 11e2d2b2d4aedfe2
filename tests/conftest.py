"""Shared fixtures: tiny models of every family, built from configs (no downloads)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from circuitcut.models.tiny import TINY_CONFIGS, tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# every test measures perplexity afresh; tests/test_perplexity_memory.py turns the cache on in a folder of its own
os.environ.setdefault("CIRCUITCUT_PERPLEXITY_CACHE", "0")
warnings.filterwarnings("ignore")
torch.set_num_threads(1)

FAMILIES = sorted(TINY_CONFIGS)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    """Each supported model type in turn."""
    return request.param


@pytest.fixture
def model(family: str) -> torch.nn.Module:
    """A tiny random model of the family."""
    return tiny_model(family)


def shared_data(rel: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"shared data {rel} not found at {SHARED} (it lives beside the checkout)")
    return path
