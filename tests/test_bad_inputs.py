"""Bad input, as a hostile but realistic user gives it: every verb refuses it with exit code 2 and one
line on stderr (no traceback), writes nothing and changes nothing; the Python API raises the
package's own error type for the same inputs.

The command line runs in-process (``circuitcut.cli.main.main``); the number, list, file and output
cases fail while the arguments are parsed, before any model is loaded. A few real subprocess runs
check the same from the outside.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import circuitcut.workflows.circuit as workflow
from circuitcut.cli.main import main
from circuitcut.errors import CircuitcutError, InputError

REF = "circuitcut/ref-opt"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of good and bad inputs, and a model folder that outputs must not clobber."""
    w = tmp_path_factory.mktemp("inputs")
    (w / "good.txt").write_text("the cat sat on the mat . " * 50, encoding="utf-8")
    (w / "good.jsonl").write_text(json.dumps({"prompt": "the cat", "answer": "sat"}) + "\n")
    (w / "data.csv").write_text("prompt,answer\nthe cat,sat\n")
    (w / "data.json").write_text(json.dumps([{"text": "the cat sat"}]))
    (w / "tasks.json").write_text(json.dumps({"prompt": "the cat", "answer": "sat"}) + "\n")
    (w / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (w / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    (w / "empty.jsonl").write_bytes(b"")
    (w / "list.jsonl").write_text("[1, 2]\n")
    (w / "text_int.jsonl").write_text('{"text": 123}\n')
    (w / "prompt_null.jsonl").write_text('{"prompt": null, "answer": "sat"}\n')
    (w / "small_task.jsonl").write_text(
        "".join(json.dumps({"prompt": f"p{i} the cat", "answer": "sat"}) + "\n" for i in range(3))
    )
    (w / "a_folder").mkdir()
    (w / "taken.safetensors").mkdir()
    model = w / "modeldir"  # stands for a user's model folder
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}\n')
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (w / "heat.json").write_text('{"mine": true}\n')  # a user's file beside an explain output
    damaged = w / "damaged"
    damaged.mkdir()
    from circuitcut.zoo.registry import alias_path

    src = alias_path(REF)
    for f in src.iterdir():
        data = f.read_bytes()
        (damaged / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    return w


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes (folders as such)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# (verb arguments, a piece of the expected message); W/ is the work folder
CASES = [
    # inspect
    (["inspect", REF, "--device", "warp9"], "is not a device"),
    (["inspect", REF, "--device", "cuda:99"], "cuda"),
    (["inspect", "W/damaged"], "damaged or truncated"),
    (["inspect", "./no/such/model"], "neither a directory"),
    # attribute
    (
        ["attribute", "--model", REF, "--output", "W/o", "--data", "W/good.txt", "--seqlen", "0"],
        ">= 1, got 0",
    ),
    (
        ["attribute", "--model", REF, "--output", "W/o", "--data", "W/good.txt", "--batch-size", "0"],
        "--batch-size",
    ),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/good.txt", "--n-samples", "-5"], "got -5"),
    (
        [
            "attribute",
            "--model",
            REF,
            "--output",
            "W/o",
            "--data",
            "W/good.txt",
            "--method",
            "gradient",
            "--lrp-rules",
            "norm",
        ],
        "LRP rules apply to method 'lrp', not 'gradient'",
    ),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/good.txt", "--n-samples", "0"], "got 0"),
    (["attribute", "--model", REF, "--output", "W/o", "--levels", "weight,foo"], "unknown 'foo'"),
    (["attribute", "--model", REF, "--output", "W/o", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["attribute", "--model", REF, "--output", "W/o", "--seed", "-1"], ">= 0"),
    (["attribute", "--model", REF, "--output", "W/o", "--seqlen", "abc"], "whole number"),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/missing.jsonl"], "no such file"),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/data.csv"], ".jsonl or .txt"),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/data.json"], ".jsonl or .txt"),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/latin1.txt"], "not UTF-8"),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/empty.jsonl"], "is empty"),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/a_folder"], "is a folder"),
    (
        ["attribute", "--model", REF, "--output", "W/modeldir/config", "--method", "magnitude"],
        "not written by circuitcut",
    ),
    (
        ["attribute", "--model", REF, "--output", "W/modeldir/model", "--method", "magnitude"],
        "not written by circuitcut",
    ),
    (["attribute", "--model", REF, "--output", "W/taken", "--method", "magnitude"], "is a folder"),
    (["attribute", "--model", REF, "--output", "W/good.txt/sub/o", "--method", "magnitude"], "is a file"),
    (["attribute", "--model", REF, "--output", "W/o", "--data", "W/list.jsonl"], "must be a JSON object"),
    (
        ["attribute", "--model", REF, "--output", "W/o", "--data", "W/text_int.jsonl"],
        "'text' must be a string",
    ),
    (
        ["attribute", "--model", REF, "--output", "W/o", "--data", "W/prompt_null.jsonl"],
        "'prompt' must be a string",
    ),
    # explain
    (["explain", "--model", REF, "--prompt", "the cat", "--output", "W/heat.png"], "ending in .html"),
    (
        ["explain", "--model", REF, "--prompt", "the cat", "--output", "W/heat.html"],
        "not written by circuitcut",
    ),
    (["explain", "--model", REF, "--file", "W/good.txt"], "must be a .jsonl file"),
    (["explain", "--model", REF], "nothing to explain"),
    # compress
    (["compress", "--model", REF, "--calibration", "W/good.txt", "--sparsity", "1.0"], "[0, 1)"),
    (["compress", "--model", REF, "--calibration", "W/good.txt", "--sparsity", "-0.1"], "[0, 1)"),
    (["compress", "--model", REF, "--calibration", "W/good.txt", "--eval-windows", "-1"], "got -1"),
    (
        [
            "compress",
            "--model",
            REF,
            "--calibration",
            "W/good.txt",
            "--method",
            "wanda",
            "--lrp-rules",
            "norm",
        ],
        "LRP rules apply to method 'lrp', not 'wanda'",
    ),
    (["compress", "--model", REF, "--calibration", "W/good.txt", "--batch-size", "0"], "got 0"),
    (["compress", "--model", REF, "--calibration", "W/data.csv"], "a text corpus must be"),
    (["compress", "--model", REF, "--calibration", "W/missing.txt"], "no such file"),
    (["compress", "--model", REF, "--calibration", "W/good.txt", "--output", "W/modeldir"], "other files"),
    (["compress", "--model", REF, "--calibration", "W/good.txt", "--output", "W/good.txt"], "is a file"),
    # circuit
    (["circuit", "--model", REF, "--output", "W/o", "--n-eval", "-3"], "got -3"),
    (["circuit", "--model", REF, "--output", "W/o", "--threshold", "0"], "(0, 1]"),
    (["circuit", "--model", REF, "--output", "W/o", "--threshold", "1.5"], "(0, 1]"),
    (["circuit", "--model", REF, "--output", "W/o", "--task", "W/tasks.json"], ".jsonl or .csv"),
    (["circuit", "--model", REF, "--output", "W/o", "--baselines", "gradient,nosuch"], "unknown 'nosuch'"),
    (["circuit", "--model", REF, "--output", "W/o", "--seeds", "0"], "--seeds"),
    (["circuit", "--model", REF, "--output", "W/o", "--aggregation", "max"], "invalid choice: 'max'"),
    (
        ["circuit", "--model", REF, "--output", "W/o", "--lrp-rules", "norm,softmax"],
        "unknown 'softmax'; use activation, norm",
    ),
    (["circuit", "--model", REF, "--output", "W/modeldir"], "other files"),
    # correct
    (
        [
            "correct",
            "--model",
            REF,
            "--undesired",
            "W/good.jsonl",
            "--general",
            "W/good.txt",
            "--output",
            "W/o",
            "--counts",
            "10,abc",
        ],
        "'abc'",
    ),
    (
        [
            "correct",
            "--model",
            REF,
            "--undesired",
            "W/good.jsonl",
            "--general",
            "W/good.txt",
            "--output",
            "W/o",
            "--counts",
            "0,5",
        ],
        ">= 1, got 0",
    ),
    (
        [
            "correct",
            "--model",
            REF,
            "--undesired",
            "W/good.jsonl",
            "--general",
            "W/good.txt",
            "--output",
            "W/o",
            "--count",
            "-1",
        ],
        "got -1",
    ),
    (
        [
            "correct",
            "--model",
            REF,
            "--undesired",
            "W/data.csv",
            "--general",
            "W/good.txt",
            "--output",
            "W/o",
        ],
        ".jsonl or .txt",
    ),
    (
        [
            "correct",
            "--model",
            REF,
            "--undesired",
            "W/good.jsonl",
            "--general",
            "W/latin1.txt",
            "--output",
            "W/o",
        ],
        "not UTF-8",
    ),
    (
        [
            "correct",
            "--model",
            REF,
            "--undesired",
            "W/good.jsonl",
            "--general",
            "W/good.txt",
            "--output",
            "W/o",
            "--max-new-tokens",
            "0",
        ],
        "got 0",
    ),
    # lasso
    (["lasso", "--model", REF, "--output", "W/o", "--d-sae", "0"], "--d-sae"),
    (["lasso", "--model", REF, "--output", "W/o", "--k", "-1"], "got -1"),
    (["lasso", "--model", REF, "--output", "W/o", "--sae-steps", "0"], "--sae-steps"),
    (["lasso", "--model", REF, "--output", "W/o", "--n-attribution", "0"], "got 0"),
    (["lasso", "--model", REF, "--output", "W/o", "--task", "W/tasks.json"], ".jsonl or .csv"),
    (["lasso", "--model", REF, "--output", "W/o", "--task", "W/small_task.jsonl"], "the task has 3 prompts"),
    (["lasso", "--model", "W/modeldir", "--output", "W/o"], "needs text in that model's language"),
    (["lasso", "--model", REF, "--output", "W/o", "--sae", "W/no_saes"], "no such folder"),
    # zoo
    (["zoo", "train", "--output", "W/o", "--steps", "0"], "--steps"),
    (["zoo", "train", "--output", "W/o", "--lr", "-1"], "> 0"),
    (["zoo", "train", "--output", "W/good.txt"], "is a file"),
    (["zoo", "train", "--output", "W/o", "--heads", "3"], "multiple of heads"),
    # demo
    (["demo", "--output", "W/modeldir"], "other files"),
    (["demo", "--output", "W/good.txt"], "is a file"),
    # no verb / unknown verb
    (["nosuchverb"], "invalid choice"),
    ([], "required"),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_cli_refuses_in_one_line(
    argv: list[str],
    expected: str,
    work: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(work)
    before = snapshot(work)
    argv = [a.replace("W/", f"{work}/") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert "Traceback" not in err and "error" in err
    assert expected in err, err
    assert snapshot(work) == before  # nothing created, nothing changed


def test_at_least_forty_cases_covering_every_verb() -> None:
    verbs = {argv[0] for argv, _ in CASES if argv}
    assert len(CASES) >= 40
    assert verbs == {"inspect", "attribute", "explain", "compress", "circuit", "correct", "lasso", "zoo", "demo",
                     "nosuchverb"}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["attribute", "--model", REF, "--output", "o", "--seqlen", "0"], "--seqlen: value must be"),
        (
            ["correct", "--model", REF, "--undesired", "x.jsonl", "--general", "g", "--output", "o"],
            "no such file",
        ),
        (["compress", "--model", REF, "--calibration", "W/data.csv"], "a text corpus must be"),
    ],
)
def test_real_process_refuses_in_one_line(argv: list[str], expected: str, work: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    before = snapshot(work)
    argv = [a.replace("W/", f"{work}/") for a in argv]
    res = subprocess.run([sys.executable, "-m", "circuitcut.cli.main", *argv], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and expected in res.stderr, res.stderr
    assert snapshot(work) == before


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\nfrom circuitcut.cli.main import main\n"
        "for argv in ([], ['attribute'], ['compress'], ['circuit'], ['correct'], ['lasso'], ['zoo', 'train'],"
        " ['explain'], ['inspect'], ['demo']):\n"
        "    assert main([*argv, '--help']) == 0\n"
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'sklearn', 'scipy') if m in sys.modules))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert res.stdout.strip().splitlines()[-1] == "[]"


# the Python API: the same inputs raise circuitcut's own errors -------------------------------------------
def test_api_raises_own_errors(work: Path) -> None:
    from circuitcut.data import load_samples
    from circuitcut.models import load_model
    from circuitcut.scores import Scores
    from circuitcut.tasks import load_task
    from circuitcut.workflows.circuit import DiscoveryConfig, discover_circuit
    from circuitcut.workflows.compress_config import CompressConfig
    from circuitcut.workflows.demo import run_demo
    from circuitcut.workflows.lasso import run_lasso
    from circuitcut.zoo.config import TrainConfig
    from circuitcut.zoo.tokenizer import build_tokenizer
    from circuitcut.zoo.train import train_reference_model

    tok = build_tokenizer()
    calls = [
        (lambda: load_samples(work / "data.csv", tok), ".jsonl or .txt"),
        (lambda: load_samples(work / "data.json", tok), ".jsonl or .txt"),
        (lambda: load_samples(work / "latin1.jsonl", tok), "not UTF-8"),
        (lambda: load_samples(work / "list.jsonl", tok), "must be a JSON object"),
        (lambda: load_samples(work / "text_int.jsonl", tok), "'text' must be a string, got int"),
        (lambda: load_samples(work / "prompt_null.jsonl", tok), "'prompt' must be a string, got NoneType"),
        (lambda: load_samples(work / "good.txt", tok, n_samples=0), "n_samples must be a whole number >= 1"),
        (lambda: load_samples(work / "good.txt", tok, seqlen=-4), "seqlen must be a whole number >= 1"),
        (lambda: load_task(work / "tasks.json"), ".jsonl or .csv"),
        (lambda: CompressConfig(eval_windows=-1), "eval_windows"),
        (lambda: CompressConfig(n_samples=0), "n_samples"),
        (lambda: CompressConfig(sparsity=1.0), "[0, 1)"),
        (lambda: TrainConfig(steps=0), "steps"),
        (lambda: TrainConfig(hidden=128, heads=3), "multiple of heads"),
        (lambda: DiscoveryConfig(n_evaluation=-3), "n_evaluation"),
        (lambda: discover_circuit(REF, output=work / "modeldir"), "other files"),
        (lambda: run_lasso(REF, steps=0), "steps"),
        (lambda: run_lasso(str(work / "modeldir")), "needs text in that model's language"),
        (lambda: run_lasso(REF, task=str(work / "small_task.jsonl")), "the task has 3 prompts"),
        (lambda: load_model(REF, device="warp9"), "is not a device"),
        (lambda: run_demo(work / "modeldir"), "other files"),
        (lambda: train_reference_model(TrainConfig(steps=1), work / "good.txt"), "is a file"),
        (lambda: load_model(work / "damaged"), "damaged or truncated"),
        (
            lambda: Scores(neurons={0: torch.ones(2)}, n_samples=1).save(work / "modeldir" / "config"),
            "not written",
        ),
    ]
    before = snapshot(work)
    for call, expected in calls:
        with pytest.raises(CircuitcutError, match=None) as exc:
            call()
        assert expected in str(exc.value), (expected, str(exc.value))
        assert "\n" not in str(exc.value)
    assert snapshot(work) == before


def test_validation_messages_name_argument_value_and_fix() -> None:
    from circuitcut import validation

    with pytest.raises(InputError, match=r"^--counts must hold whole numbers >= 1, got 0$"):
        validation.int_list("5,0", "--counts")
    with pytest.raises(InputError, match=r"^seeds must be a whole number >= 1, got True$"):
        validation.positive_int(True, "seeds")
    assert validation.int_list(" 10, 20 ,50 ", "--counts") == (10, 20, 50)
    assert validation.fraction("0", "sparsity", zero=True) == 0.0
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        validation.fraction("nan", "sparsity", zero=True)
    assert validation.positive_int(3.0, "n") == 3
    with pytest.raises(InputError, match=r"got 2\.5"):
        validation.positive_int(2.5, "n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_share": 1.5}, "test_share must be a number in (0, 1)"),
        ({"n_general": 0}, "n_general"),
        ({"eval_windows": -1}, "eval_windows"),
        ({"baselines": ("magnitude",)}, "unknown contrastive method 'magnitude'"),
    ],
)
def test_correction_config_refuses_bad_settings(kwargs: dict, message: str) -> None:
    from circuitcut.workflows.correct import CorrectionConfig

    with pytest.raises(CircuitcutError, match=re.escape(message)):
        CorrectionConfig(**kwargs)


def test_run_correction_checks_its_output_before_loading(tmp_path: Path) -> None:
    from circuitcut.workflows.correct import run_correction

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    general = tmp_path / "g.txt"
    general.write_text("some general text " * 20)
    with pytest.raises(CircuitcutError, match="output"):
        run_correction("no/such/model", ["a prompt"], str(general), str(taken), behaviour="repetition")
    assert (taken / "notes.txt").read_text() == "mine"


def test_circuit_options_reach_the_workflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--aggregation, --seed-mode, --lrp-rules and --ablation are passed to discover_circuit as given."""

    class Stop(Exception):
        pass

    seen: dict = {}

    def fake(*args: object, **kwargs: object) -> dict:
        seen["config"] = args[3]
        raise Stop

    monkeypatch.setattr(workflow, "discover_circuit", fake)
    with pytest.raises(Stop):
        main(["circuit", "--model", REF, "--output", str(tmp_path / "o"), "--aggregation", "token_abs",
              "--seed-mode", "value", "--lrp-rules", "gate,norm", "--ablation", "mean", "--search", "scan",
              "--no-progress"])  # fmt: skip
    sweep = seen["config"].sweep
    assert sweep.scoring.aggregation == "token_abs" and sweep.scoring.seed_mode == "value"
    assert sweep.scoring.lrp_rules == ("norm", "gate") and sweep.ablation == "mean" and sweep.search == "scan"


# outputs: run folders written whole, locked, never over another verb's run; over-long records; NaN --------
CALIBRATION = " ".join(["Mary went to the store . Tom sang : la la la ."] * 40)


def _compress(folder: Path, output: Path) -> dict:
    """A small compression of a tiny random model into ``output`` (a real run of the verb)."""
    from circuitcut.models.tiny import tiny_model
    from circuitcut.workflows.compress import compress
    from circuitcut.workflows.compress_config import CompressConfig
    from circuitcut.zoo.tokenizer import build_tokenizer

    cal = folder / "cal.txt"
    if not cal.exists():
        cal.write_text(CALIBRATION)
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    cfg = CompressConfig(n_samples=2, seqlen=16, eval_windows=2)
    return compress(model, str(cal), output, cfg, tokenizer=tok, progress=False)


def _hold(output: Path, verb: str) -> subprocess.Popen:
    """Another process that holds ``output``'s run folder (as a run of ``verb`` does) until its stdin
    closes; returns once it holds it."""
    code = ("import sys\nfrom circuitcut.run_folder import run_folder\n"
            "with run_folder(sys.argv[1], sys.argv[2]):\n    print('holding', flush=True)\n    sys.stdin.read()\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(output), verb], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_ctrl_c_during_export_then_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the report is written (after the model and report.json): nothing is left that the
    same call then refuses, and the rerun writes the whole folder; over an earlier run, the
    interrupted run leaves that run as it was and a finished one replaces it whole."""
    import circuitcut.workflows.compress as compress_module

    out = tmp_path / "run"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compress_module, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _compress(tmp_path, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.txt"]  # no folder, no temporary, no lock
    monkeypatch.undo()
    _compress(tmp_path, out)
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "mask.safetensors", "pruning.json", "report.json", "report.md",
            "report.html", "circuitcut-run.json"} <= files  # fmt: skip
    assert json.loads((out / "circuitcut-run.json").read_text())["verb"] == "compress"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.txt", "run"]
    # over the earlier run: an interruption keeps it as it was, a finished run replaces it whole
    (out / "notes.txt").write_text("from the earlier run")
    before = snapshot(out)
    monkeypatch.setattr(compress_module, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _compress(tmp_path, out)
    assert snapshot(out) == before
    monkeypatch.undo()
    _compress(tmp_path, out)
    assert not (out / "notes.txt").exists() and (out / "report.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.txt", "run"]


def test_second_concurrent_run_is_refused_naming_the_other_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs into one folder: the second is refused (API and CLI) with the folder and the first
    one's process named; once that process is killed outright, its lock is taken over."""
    from circuitcut import validation
    from circuitcut.run_folder import run_folder

    out = tmp_path / "run"
    (tmp_path / "cal.txt").write_text(CALIBRATION)
    proc = _hold(out, "compress")
    try:
        with pytest.raises(InputError) as exc:
            _compress(tmp_path, out)
        message = str(exc.value)
        assert repr(str(out)) in message and f"process {proc.pid}" in message and "compress run" in message
        argv = ["compress", "--model", REF, "--calibration", str(tmp_path / "cal.txt"), "--output", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"process {proc.pid}" in err and str(out) in err, err
    finally:
        proc.kill()  # outright: no cleanup, its lock file and temporary folder stay
        proc.wait()
    assert validation.lock_path(out).exists() and validation.lock_holder(out) is None
    _compress(tmp_path, out)  # the dead process's lock is taken over, its leftovers removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.txt", "run"]
    # in one process too: a run holding the folder refuses a second one
    with run_folder(out, "compress"), pytest.raises(InputError, match=f"process {os.getpid()}"):
        _compress(tmp_path, out)


def test_folder_of_another_verb_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compress --output into an earlier correct run: refused before any work (API and CLI), the
    correct run untouched."""
    from circuitcut.run_folder import run_folder

    out = tmp_path / "correction"
    (tmp_path / "cal.txt").write_text(CALIBRATION)
    with run_folder(out, "correct") as folder:
        assert folder is not None
        (folder / "report.md").write_text("the correction report\n")
    assert json.loads((out / "circuitcut-run.json").read_text())["verb"] == "correct"
    before = snapshot(tmp_path)
    with pytest.raises(InputError) as exc:
        _compress(tmp_path, out)
    assert "holds a circuitcut correct run" in str(exc.value) and "choose another folder" in str(exc.value)
    assert snapshot(tmp_path) == before
    for argv in (["compress", "--model", REF, "--calibration", "W/cal.txt", "--output", "W/correction"],
                 ["circuit", "--model", REF, "--output", "W/correction"]):  # fmt: skip
        assert main([a.replace("W/", f"{tmp_path}/") for a in argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "holds a circuitcut correct run" in err, err
    assert snapshot(tmp_path) == before


def test_over_long_jsonl_text_is_refused_unless_truncated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSONL text longer than --seqlen is refused with its line named; --truncate / truncate=True
    cuts it to its first seqlen tokens with a warning."""
    from circuitcut.data import load_samples
    from circuitcut.zoo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    data = tmp_path / "texts.jsonl"
    short, long = "the cat sat", "Mary went to the store . Tom sang : la la la . " * 3
    data.write_text(json.dumps({"text": short}) + "\n" + json.dumps({"text": long}) + "\n")
    n_long = len(tok(long, add_special_tokens=True)["input_ids"])
    assert n_long > 12
    with pytest.raises(InputError) as exc:
        load_samples(data, tok, seqlen=12)
    assert f"{data}:2: a text record of {n_long} tokens" in str(exc.value)
    assert "longer than seqlen=12" in str(exc.value) and "--truncate" in str(exc.value)
    with pytest.warns(UserWarning, match=f"{re.escape(str(data))}:2: a text record of {n_long} tokens"):
        samples = load_samples(data, tok, seqlen=12, truncate=True)
    full = tok(long, add_special_tokens=True)["input_ids"]
    assert list(samples[1].input_ids) == full[:12]
    assert list(samples[0].input_ids) == tok(short, add_special_tokens=True)["input_ids"]
    # the command line: refused in one line, or cut with --truncate (documented in --help)
    argv = ["attribute", "--model", REF, "--data", str(data), "--seqlen", "12", "--method", "gradient",
            "--output", str(tmp_path / "scores"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "longer than seqlen=12" in err, err
    assert not (tmp_path / "scores.safetensors").exists()
    with pytest.warns(UserWarning, match="cut to its first 12 tokens"):
        assert main([*argv, "--truncate"]) == 0
    assert (tmp_path / "scores.safetensors").is_file()
    assert main(["attribute", "--help"]) == 0
    assert "--truncate" in capsys.readouterr().out


def test_nan_or_infinite_scores_are_refused(tmp_path: Path) -> None:
    """Scores holding NaN or infinity are refused when made, loaded, or turned into a mask, with the
    tensor named."""
    from circuitcut.io import write_pair
    from circuitcut.models import get_adapter
    from circuitcut.models.tiny import tiny_model
    from circuitcut.pruning import unit_mask, unstructured_mask
    from circuitcut.scores import FORMAT, Scores

    with pytest.raises(CircuitcutError, match=r"'neuron/1' hold 1 NaN value\(s\) of 3"):
        Scores(neurons={0: torch.ones(3), 1: torch.tensor([1.0, float("nan"), 2.0])}, n_samples=1)
    adapter = get_adapter(tiny_model("llama"))
    lin = adapter.neuron_site(0)
    weights = {lin.name: torch.rand(lin.out_features, lin.in_features)}
    scores = Scores(weights=weights, neurons={0: torch.rand(adapter.n_neurons)}, n_samples=1)
    unstructured_mask(scores, adapter, 0.5, layers=[lin.name])  # finite: fine
    scores.weights[lin.name][0, 0] = float("inf")  # changed after it was made
    with pytest.raises(CircuitcutError, match=rf"'weight/{re.escape(lin.name)}' hold 1 infinite value"):
        unstructured_mask(scores, adapter, 0.5, layers=[lin.name])
    scores.weights[lin.name][0, 0] = 0.0
    scores.neurons[0][3] = float("-inf")
    with pytest.raises(CircuitcutError, match="'neuron/0' hold 1 infinite"):
        unit_mask(scores, adapter, "neuron", count=1)
    path = tmp_path / "nan_scores.safetensors"  # a file holding NaN, as a half-precision run could write
    write_pair(path, {"head/0": torch.tensor([float("nan"), 1.0])}, {"n_samples": 1, "meta": {}}, FORMAT)
    with pytest.raises(CircuitcutError, match="'head/0' hold 1 NaN"):
        Scores.load(path)
