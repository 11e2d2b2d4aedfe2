"""Every config field has exactly one command-line option, whose default is the dataclass's.

Each verb's parser is built from :func:`circuitcut.cli.main.build_parser`. For every leaf field of
the config the verb builds (nested configs such as ``scoring`` walked into), the table below names its
option; the test checks that the option exists exactly once in that verb, that parsing no options
gives back the dataclass's own config, and that giving the option a non-default value changes that
field and no other. Fields with no option are listed with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from circuitcut.attribution.config import Execution, ScoringConfig
from circuitcut.circuits.config import SweepConfig
from circuitcut.cli import circuit_cmd, compress_cmd, correct_cmd, sae_cmd
from circuitcut.cli.main import build_parser
from circuitcut.cli.scoring_options import scoring_from_args
from circuitcut.correction.config import CorrectionConfig
from circuitcut.lasso.sae_config import SAETrainConfig
from circuitcut.workflows.circuit_config import DiscoveryConfig
from circuitcut.workflows.compress_config import CompressConfig

#: the scoring options, with a non-default value for each field (method: one every verb offers)
SCORING = {
    "method": ("--method", "gradient"),
    "variant": ("--variant", "cp-lrp"),
    "aggregation": ("--aggregation", "signed"),
    "seed_mode": ("--seed-mode", "value"),
    "lrp_rules": ("--lrp-rules", "norm,gate"),
    "batch_size": ("--batch-size", "3"),
    "seed": ("--seed", "7"),
}


def _nested(prefix: str, table: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {f"{prefix}.{k}": v for k, v in table.items()}


#: verb -> (a minimal command line, the config it builds from parsed args, field path -> (option, value))
VERBS: dict[str, tuple[list[str], Any, dict[str, tuple[str, str]]]] = {
    "attribute": (
        ["attribute", "--model", "M", "--output", "o.safetensors"],
        lambda a: (
            scoring_from_args(a),
            Execution(a.checkpoint, a.checkpoint_every, a.gradient_checkpointing),
        ),
        {
            **_nested("0", SCORING),
            "1.checkpoint": ("--checkpoint", "ck"),
            "1.checkpoint_every": ("--checkpoint-every", "3"),
            "1.gradient_checkpointing": ("--gradient-checkpointing", ""),
        },
    ),
    "compress": (
        ["compress", "--model", "M", "--calibration", "TEXT"],
        compress_cmd.compress_config,
        {
            **_nested("scoring", SCORING),
            "sparsity": ("--sparsity", "0.3"),
            "scheme": ("--scheme", "layer"),
            "layers": ("--layers", "mlp"),
            "n_samples": ("--n-samples", "5"),
            "seqlen": ("--seqlen", "32"),
            "eval_seqlen": ("--eval-seqlen", "32"),
            "eval_windows": ("--eval-windows", "4"),
            "sequential": ("--sequential", ""),
            "budget": ("--budget", "owl"),
        },
    ),
    "circuit": (
        ["circuit", "--model", "M", "--output", "out"],
        circuit_cmd.discovery_config,
        {
            **_nested("sweep.scoring", SCORING),
            "sweep.scoring.baseline": ("--baseline", "counterfactual"),
            "sweep.scoring.ig_steps": ("--ig-steps", "3"),
            "sweep.baselines": ("--baselines", "random"),
            "sweep.level": ("--level", "head"),
            "sweep.layers": ("--layers", "mlp"),
            "sweep.keep": ("--keep", "1,0.1"),
            "sweep.seeds": ("--seeds", "2"),
            "sweep.n_ref": ("--n-ref", "9"),
            "sweep.eval_batch_size": ("--eval-batch-size", "5"),
            "sweep.threshold": ("--threshold", "0.8"),
            "sweep.ablation": ("--ablation", "mean"),
            "sweep.search": ("--search", "scan"),
            "sweep.random_seeds": ("--random-seeds", "1"),
            "n_attribution": ("--n-attribution", "33"),
            "n_evaluation": ("--n-eval", "44"),
            "heldout_templates": ("--heldout-templates", "0.5"),
            "ioi_lists": ("--ioi-lists", "LISTS"),
        },
    ),
    "correct": (
        ["correct", "--model", "M", "--undesired", "TEXT", "--general", "TEXT", "--output", "out"],
        correct_cmd.correction_config,
        {
            **_nested(
                "scoring", {**SCORING, "method": ("--method", "wanda"), "lrp_rules": ("--lrp-rules", "norm")}
            ),
            "level": ("--level", "weight"),
            "layers": ("--layers", "mlp"),
            "counts": ("--counts", "3,4"),
            "report_count": ("--count", "60"),
            "baselines": ("--baselines", "lrp"),
            "controls": ("--controls", "random"),
            "seeds": ("--seeds", "2"),
            "n_general": ("--n-general", "9"),
            "general_seqlen": ("--seqlen", "17"),
            "eval_windows": ("--eval-windows", "7"),
            "normalize": ("--normalize", ""),
            "explain": ("--explain", "flagged"),
            "generation.max_new_tokens": ("--max-new-tokens", "9"),
            "test_share": ("--test-share", "0.5"),
            "export": ("--export", "consensus"),
            "n_general_prompts": ("--n-general-prompts", "3"),
            "general_prompt_tokens": ("--general-prompt-tokens", "5"),
            "disagreement_bound": ("--disagreement-bound", "0.5"),
            "alpha": ("--alpha", "0.01"),
            "quality.perplexity": ("--max-perplexity-increase", "0.3"),
            "quality.fluency": ("--max-fluency-increase", "0.7"),
            "quality.behaviour_fluency": ("--max-behaviour-fluency-increase", "5"),
            "quality.diversity": ("--max-diversity-drop", "0.4"),
            "quality.empty": ("--max-empty-share", "0.6"),
            "judge": ("--judge", "none"),
            "sample": ("--no-sample", ""),
            "samples": ("--samples", "4"),
            "bootstrap": ("--bootstrap", "200"),
            "generation.top_p": ("--top-p", "0.5"),
            "generation.temperature": ("--temperature", "0.7"),
            "generation.seed": ("--sample-seed", "3"),
        },
    ),
    "sae train": (
        [
            "sae",
            "train",
            "--model",
            "M",
            "--sites",
            "blocks.0.hook_resid_post",
            "--text",
            "TEXT",
            "--output",
            "out",
        ],
        sae_cmd.train_config,
        {
            "d_sae": ("--d-sae", "16"),
            "architecture": ("--architecture", "standard"),
            "k": ("--k", "4"),
            "l1_coefficient": ("--l1", "0.1"),
            "steps": ("--steps", "9"),
            "batch_tokens": ("--batch-tokens", "64"),
            "lr": ("--lr", "0.01"),
            "buffer_tokens": ("--buffer-tokens", "4096"),
            "model_batch": ("--model-batch", "3"),
            "seed": ("--seed", "5"),
            "checkpoint_every": ("--checkpoint-every", "7"),
            "resample_dead": ("--no-resample", ""),
            "dead_tokens": ("--dead-tokens", "999"),
            "skip_positions": ("--skip-positions", "0"),
        },
    ),
}

#: fields with no option, and why
NO_COUNTERFACTUAL = (
    "the verb's data have no counterfactual prompts: the baseline is zero, method ig is not offered"
)
NO_OPTION = {
    "attribute": {"0.baseline": NO_COUNTERFACTUAL, "0.ig_steps": NO_COUNTERFACTUAL},
    "compress": {"scoring.baseline": NO_COUNTERFACTUAL, "scoring.ig_steps": NO_COUNTERFACTUAL},
    "circuit": {
        "sweep.metric": "the task's own metric (logit difference with a contrast, else the answer's log-probability)",
        "sweep.schemes": "the weight-level scheme of each method is the papers' (Wanda row-wise, others global)",
        "sweep.default_scheme": "as above",
    },
    "correct": {
        "scoring.baseline": NO_COUNTERFACTUAL,
        "scoring.ig_steps": NO_COUNTERFACTUAL,
        "generation.do_sample": "the main continuations are greedy; sampled judging has its own switch (--no-sample)",
        "generation.num_samples": "greedy continuations are one per prompt; sampled judging draws --samples per prompt",
        "generation.batch_size": "prompts per generation batch: does not change the figures",
        "generation.stop_at_eos": "decoding stops at the end of text, as the model was trained",
    },
}

DEFAULTS = {
    "attribute": (ScoringConfig(), Execution()),
    "compress": CompressConfig(),
    "circuit": DiscoveryConfig(),
    "correct": CorrectionConfig(),
    "sae train": SAETrainConfig(),
}


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf field paths of a (tuple of) dataclass(es)."""
    if isinstance(obj, tuple) and obj and dataclasses.is_dataclass(obj[0]):
        return {k: v for i, o in enumerate(obj) for k, v in _leaves(o, f"{prefix}{i}.").items()}
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_leaves(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


@pytest.fixture
def lines(tmp_path: Path) -> dict[str, list[str]]:
    """Each verb's minimal command line, with its input files written and its output in tmp_path."""
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat .\nthe dog ran .\n", encoding="utf-8")
    # --ioi-lists must exist; its lists are read only when the run starts
    (tmp_path / "lists.json").write_text("{}", encoding="utf-8")
    subst = {
        "TEXT": str(text),
        "out": str(tmp_path / "out"),
        "o.safetensors": str(tmp_path / "o.safetensors"),
    }
    return {verb: [subst.get(w, w) for w in VERBS[verb][0]] for verb in VERBS}


def _parser(verb: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in verb.split():  # "sae train": the sub-verb's parser
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_config_field_has_one_option_with_the_dataclass_default(verb: str, lines: dict) -> None:
    _, build, table = VERBS[verb]
    line = lines[verb]
    parser = _parser(verb)
    fields = set(_leaves(DEFAULTS[verb]))
    assert set(table) | set(NO_OPTION.get(verb, {})) == fields
    options = [s for a in parser._actions for s in a.option_strings]
    for option, _ in table.values():
        assert options.count(option) == 1, (verb, option)
    assert build(parser.parse_args(line[len(verb.split()) :])) == DEFAULTS[verb]


@pytest.mark.parametrize("verb", list(VERBS))
def test_each_option_changes_its_field_and_no_other(verb: str, lines: dict) -> None:
    _, build, table = VERBS[verb]
    line = lines[verb]
    parser = _parser(verb)
    base = _leaves(build(parser.parse_args(line[len(verb.split()) :])))
    for path, (option, value) in table.items():
        value = str(Path(line[-1]).parent / "lists.json") if value == "LISTS" else value
        extra = [option] if value == "" else [option, value]
        got = _leaves(build(parser.parse_args([*line[len(verb.split()) :], *extra])))
        changed = {k for k in got if got[k] != base[k]}
        if path.endswith("scoring.method") or path == "0.method":
            changed -= {p for p in changed if p.endswith("lrp_rules")}  # rules belong to lrp alone
        if path == "report_count":
            changed -= {"counts"}  # the exported count joins the sweep's counts
        if path == "counts":
            changed -= {"report_count"}  # which defaults to the largest count
        assert changed == {path}, (verb, option, changed)


def test_sweep_config_builds_each_methods_scores_from_one_scoring() -> None:
    cfg = SweepConfig(
        ScoringConfig(lrp_rules=("norm",), aggregation="token_abs", seed=5), baselines=("gradient",)
    )
    assert cfg.methods == ("lrp", "gradient")
    lrp, grad = cfg.scoring_for("lrp", 2), cfg.scoring_for("gradient", 2)
    assert (lrp.lrp_rules, lrp.seed, lrp.aggregation) == (("norm",), 7, "token_abs")
    assert (grad.method, grad.lrp_rules, grad.seed, grad.aggregation) == ("gradient", None, 7, "token_abs")
