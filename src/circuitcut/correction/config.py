"""What a correction run does (:func:`circuitcut.workflows.correct.correct`), checked when made:
plain data, importable without torch, so the command line shows the defaults at once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from circuitcut import validation
from circuitcut.attribution.config import ScoringConfig
from circuitcut.decoding import GenerationSettings
from circuitcut.errors import CircuitcutError
from circuitcut.metrics import QualityBounds

#: what is explained of the undesired continuations (see :mod:`circuitcut.correction.explained`)
EXPLAIN = ("continuation", "flagged")
CONTRASTIVE = ("lrp", "gradient", "wanda")
CONTROLS = ("random", "magnitude")
#: how the exported mask is chosen
EXPORTS = ("all", "consensus")
#: the judge specs besides a scorer spec (wordlist:FILE, profanity-check, hf:MODEL)
JUDGES = ("auto", "none")


@dataclass
class CorrectionConfig:
    """What a correction run does (recorded in its report)."""

    level: str = "neuron"
    layers: str = "all"
    counts: tuple[int, ...] = (10, 20, 50)
    report_count: int | None = None
    #: the scores: the contrastive method whose mask is exported, and the settings every method shares
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(batch_size=16))
    #: the contrastive methods compared with it
    baselines: tuple[str, ...] = CONTRASTIVE[1:]
    controls: tuple[str, ...] = CONTROLS
    seeds: int = 3
    n_general: int = 64
    general_seqlen: int = 64
    eval_windows: int | None = 100
    normalize: bool = False
    #: what is explained of the undesired continuations: every token, or only the words the scorer
    #: flags (a word list's matches, a classifier's by occlusion: :mod:`circuitcut.correction.explained`)
    explain: str = "continuation"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    #: share of the undesired prompts held out from every attribution, to test the exported model
    test_share: float = 0.25
    #: the exported mask: "all" (attribution on the whole development pool) or "consensus" of seeds
    export: str = "all"
    #: general prompts continued for toxicity / fluency / diversity, and their length in tokens
    n_general_prompts: int = 16
    general_prompt_tokens: int = 12
    #: seeds disagree when their held-out rates at the report count span more than this
    disagreement_bound: float = 0.25
    alpha: float = 0.05
    quality: QualityBounds = field(default_factory=QualityBounds)
    #: the second, independent scorer of the dense and exported models (circuitcut.correction.judging):
    #: "auto" (the alt-profanity-check classifier when the selection scorer is a word list), "none",
    #: or a scorer spec (wordlist:FILE, profanity-check, hf:MODEL_ID_OR_PATH)
    judge: str = "auto"
    #: judge the dense and exported models on sampled continuations too (RealToxicityPrompts figures,
    #: diversity); the sampling is generation's top_p, temperature and seed
    sample: bool = True
    #: samples per prompt (k)
    samples: int = 10
    #: bootstrap resamples of the intervals over prompts (seeded with generation.seed)
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        if self.level not in ("neuron", "weight"):
            raise CircuitcutError(f"correction prunes 'neuron' or 'weight' components, got {self.level!r}")
        if not self.counts or any(c < 1 for c in self.counts):
            raise CircuitcutError("counts must be positive numbers of components")
        self.counts = tuple(sorted(set(self.counts)))
        if self.report_count is None:
            self.report_count = self.counts[-1]
        if self.report_count not in self.counts:
            raise CircuitcutError(f"report_count {self.report_count} is not among the counts {self.counts}")
        self.scoring = ScoringConfig.of(self.scoring)
        if self.scoring.baseline != "zero":
            raise CircuitcutError(
                "correction explains its own continuations, which have no counterfactual: use baseline zero"
            )
        for name in self.methods:
            validation.choice(name, "contrastive method", CONTRASTIVE)
        for name in self.controls:
            validation.choice(name, "control", CONTROLS)
        if self.seeds < 1:
            raise CircuitcutError(f"seeds must be >= 1, got {self.seeds}")
        if self.export not in EXPORTS:
            raise CircuitcutError(f"unknown export choice {self.export!r}; use one of {', '.join(EXPORTS)}")
        self.disagreement_bound = validation.non_negative_float(self.disagreement_bound, "disagreement_bound")
        for name in (
            "n_general",
            "general_seqlen",
            "n_general_prompts",
            "general_prompt_tokens",
        ):
            setattr(self, name, validation.positive_int(getattr(self, name), name))
        self.eval_windows = validation.optional_positive_int(self.eval_windows, "eval_windows")
        self.test_share = validation.fraction(self.test_share, "test_share")
        self.alpha = validation.fraction(self.alpha, "alpha")
        validation.choice(self.explain, "explain", EXPLAIN)
        self.samples = validation.positive_int(self.samples, "samples")
        self.bootstrap = validation.positive_int(self.bootstrap, "bootstrap")
        check_judge(self.judge)

    @property
    def methods(self) -> tuple[str, ...]:
        """The contrastive methods: the exported one first, then the baselines (each once)."""
        return tuple(dict.fromkeys((self.scoring.method, *self.baselines)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``methods`` included, as reports read it)."""
        return {**asdict(self), "methods": list(self.methods), "scoring": self.scoring.as_dict(),
                "generation": self.generation.as_dict(), "quality": self.quality.as_dict()}  # fmt: skip


def check_judge(spec: str) -> str:
    """A judge spec: ``auto``, ``none``, ``wordlist:FILE``, ``profanity-check`` or ``hf:MODEL`` (the
    scorer itself is built when the run starts)."""
    if spec in (*JUDGES, "profanity-check", "alt-profanity-check") or (
        isinstance(spec, str)
        and spec.split(":", 1)[0] in ("wordlist", "hf")
        and spec.split(":", 1)[1:] != [""]
    ):
        return spec
    raise CircuitcutError(
        f"unknown judge {spec!r}; use auto, none, wordlist:FILE, profanity-check or hf:MODEL_ID_OR_PATH"
    )
