"""How text becomes token ids: the one place, following the model's own encoding.

A model is trained on text as its tokenizer encodes it, special tokens included: Llama 2/3,
TinyLlama and Gemma put a BOS before every document, OPT a ``</s>``. Without it a BOS-trained model
is badly off (Gemma 3 270M: IOI accuracy 0.105 without, 0.995 with). The policy, applied by every
entry point through :class:`Encoder`:

* **prompts** (task prompts, reference texts, generation prompts, explained prompts) start with the
  special tokens the tokenizer puts *before* a text; special tokens it would put *after* a text (an
  EOS some tokenizers append) are not added: a prompt is continued, it does not end;
* **answers, targets, contrasts and continuations** are encoded as they run on from their prompt,
  with nothing added; each must be a real token of the vocabulary (not the unknown token), and
  answers, contrasts and candidates exactly one;
* **windows** of a corpus (calibration, reference windows, perplexity): the corpus is encoded once
  without special tokens and cut into consecutive chunks; each window is the prefix followed by
  ``seqlen - len(prefix)`` corpus tokens, so every window starts as a document does. Perplexity
  scores every corpus token of a window (the first one predicted from the BOS): with a BOS this is
  lm-evaluation-harness's rolling-window convention (a document's first window is fed its prefix
  token) applied to each window; without one (GPT-2, SmolLM2) it is Wanda's protocol, the window's
  first token being context only;
* ``special_tokens=False`` turns the prefix off everywhere; the choice is recorded in every output's
  provenance (:meth:`Encoder.provenance`).

Lengths are checked against the model's context (its position table): a prompt or window longer
than the context is refused with the limit named.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from circuitcut.errors import CircuitcutError

_PROBE = "Hello world"
#: config fields that hold a model's context length, in order of preference
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_length(config: Any) -> int | None:
    """The number of positions a model was built for (its position table), or ``None`` if unknown."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in _CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def special_prefix(tokenizer: Any) -> tuple[int, ...]:
    """The special token ids the tokenizer puts before a text (``()`` if none)."""
    plain = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return tuple(full[:start])
    raise CircuitcutError(
        "the tokenizer encodes a text differently with and without its special tokens (not only "
        "added before or after); pass special_tokens=False (--no-special-tokens) to use it without them"
    )


class Encoder:
    """A tokenizer with circuitcut's encoding policy (see the module docstring).

    Attributes not defined here (``decode``, ``pad_token_id``, ``save_pretrained``...) are the
    tokenizer's, so an Encoder can be passed wherever the tokenizer is read. Calling it like a
    tokenizer is deliberately not supported: text goes through the methods below.
    """

    def __init__(self, tokenizer: Any, special_tokens: bool = True, context: int | None = None) -> None:
        if tokenizer is None:
            raise CircuitcutError("encoding text needs the model's tokenizer; none was loaded or given")
        if isinstance(tokenizer, Encoder):
            tokenizer = tokenizer.tokenizer
        self.tokenizer = tokenizer
        self.special_tokens = bool(special_tokens)
        self.prefix: tuple[int, ...] = special_prefix(tokenizer) if special_tokens else ()
        self.context = context

    def __getattr__(self, name: str) -> Any:
        if name == "tokenizer":  # not yet set (unpickling, copy): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __repr__(self) -> str:
        return f"Encoder({type(self.tokenizer).__name__}, prefix={list(self.prefix)}, context={self.context})"

    # -- text pieces ------------------------------------------------------------------------------
    def pieces(self, text: str) -> list[int]:
        """The tokens of a text with nothing added (a corpus stream, or a piece inside a prompt)."""
        if not isinstance(text, str):
            raise CircuitcutError(f"expected text, got {type(text).__name__} {text!r}")
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt(self, text: str, what: str = "prompt") -> list[int]:
        """A prompt's ids: the prefix, then its tokens; refused if empty or longer than the context."""
        ids = list(self.prefix) + self.pieces(text)
        if len(ids) == len(self.prefix):
            raise CircuitcutError(f"the {what} {text!r} is empty")
        self.check_length(len(ids), f"the {what} {short_text(text)!r}")
        return ids

    def continuation(self, prompt: str, continuation: str, space: bool = True) -> tuple[list[int], list[int]]:
        """A prompt's ids (with the prefix) and its continuation's ids as they run on from it.

        A space is put between them unless the continuation starts with one, so word-level and BPE
        tokenizers see the continuation as in running text (the leading-space convention);
        ``space=False`` glues it to the prompt's last character instead (a number's next digits:
        ``"32"`` after ``"... the year 17"``), and where the tokenizer then merges the prompt's last
        token with it (GPT-2's one token ``" 1776"`` for ``" 17"`` and ``"76"``), the continuation
        is its own tokens, the ones the model would predict after the prompt.
        """
        p = self.pieces(prompt)
        glue = "" if not space or continuation[:1].isspace() else " "
        full = self.pieces(prompt + glue + continuation)
        if full[: len(p)] == p and len(full) > len(p):
            cont = full[len(p) :]
        elif not space and continuation.strip():
            cont = self.pieces(continuation)
        else:
            raise CircuitcutError(
                f"cannot separate the continuation {continuation!r} from its prompt after tokenisation"
            )
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is not None and unk in cont:
            raise CircuitcutError(
                f"{continuation!r} contains a piece this tokenizer does not know (it becomes "
                f"{self.tokenizer.unk_token!r}); use words of the model's vocabulary"
            )
        ids = list(self.prefix) + p
        self.check_length(len(ids) + len(cont), f"the prompt {short_text(prompt)!r} with {continuation!r}")
        return ids, cont

    def token(self, prompt: str, word: str, what: str = "answer", space: bool = True) -> int:
        """The single token ``word`` becomes after ``prompt`` (after a space, or glued to it with
        ``space=False``: :meth:`continuation`); refused with the pieces named if it is several
        tokens or the unknown token."""
        if not isinstance(word, str) or not word.strip():
            raise CircuitcutError(f"the {what} must be a non-empty word, got {word!r}")
        try:
            _, ids = self.continuation(prompt, word, space)
        except CircuitcutError as exc:
            raise CircuitcutError(f"the {what} {word!r}: {exc}") from exc
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise CircuitcutError(
                f"the {what} {word!r} is {len(ids)} tokens for this tokenizer ({pieces}); it must be "
                "one token: choose a word the tokenizer keeps whole"
            )
        return ids[0]

    # -- windows ----------------------------------------------------------------------------------
    def window(self, stream: Sequence[int], start: int, seqlen: int) -> list[int]:
        """The window whose corpus tokens start at ``start`` of an encoded stream."""
        body = window_body(seqlen, self.prefix, self.context)
        return list(self.prefix) + list(stream[start : start + body])

    def windows(self, stream: Sequence[int], seqlen: int, limit: int | None = None) -> list[list[int]]:
        """Consecutive windows of an encoded corpus stream (see :func:`cut_windows`)."""
        return cut_windows(stream, seqlen, self.prefix, self.context, limit)

    # -- checks and provenance --------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        """The id batches are padded with (:func:`pad_id`)."""
        return pad_id(self.tokenizer)

    def check_length(self, n: int, what: str, fix: str = "shorten it") -> None:
        """Refuse ``n`` tokens when they exceed the model's context."""
        check_length(n, self.context, what, fix)

    def provenance(self) -> dict[str, Any]:
        """How text was encoded, for output sidecars and reports."""
        return {
            "special_tokens": self.special_tokens,
            "prefix_ids": list(self.prefix),
            "prefix_tokens": self.tokenizer.convert_ids_to_tokens(list(self.prefix)),
            "context": self.context,
        }


def pad_id(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end-of-text token, else 0.
    Padding is always masked out (and on the right of a causal model's input seen by no real token),
    so any id in the vocabulary gives the same figures; this one is used everywhere for clarity."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def check_length(n: int, context: int | None, what: str, fix: str = "shorten it") -> None:
    """Refuse ``n`` tokens when they exceed a context of ``context`` positions (``None``: unknown)."""
    if context is not None and n > context:
        raise CircuitcutError(
            f"{what} is {n} tokens, longer than the model's context of {context} positions; {fix}"
        )


def window_body(seqlen: int, prefix: Sequence[int] = (), context: int | None = None) -> int:
    """How many corpus tokens a window of ``seqlen`` holds after the prefix (checked against the
    context)."""
    if not isinstance(seqlen, int) or isinstance(seqlen, bool) or seqlen < 2:
        raise CircuitcutError(f"a window needs at least 2 tokens, got seqlen={seqlen!r}")
    check_length(seqlen, context, f"a window of seqlen={seqlen}", fix="pass a smaller seqlen")
    body = seqlen - len(prefix)
    if body < 1:
        raise CircuitcutError(f"seqlen {seqlen} leaves no room after the {len(prefix)} prefix tokens")
    return body


def cut_windows(
    stream: Sequence[int],
    seqlen: int,
    prefix: Sequence[int] = (),
    context: int | None = None,
    limit: int | None = None,
) -> list[list[int]]:
    """Consecutive non-overlapping windows of a corpus stream encoded without special tokens: each
    is ``prefix`` followed by the next ``seqlen - len(prefix)`` stream tokens; the last partial one is
    dropped; at most ``limit``."""
    body = window_body(seqlen, prefix, context)
    n = len(stream) // body
    if limit is not None:
        n = min(n, limit)
    return [list(prefix) + list(stream[i * body : (i + 1) * body]) for i in range(n)]


def as_encoder(tokenizer: Any, model: Any = None, special_tokens: bool | None = None) -> Encoder:
    """An :class:`Encoder` for a tokenizer (returned as it is when already one, unless
    ``special_tokens`` asks otherwise); ``model`` gives the context length."""
    if isinstance(tokenizer, Encoder) and (
        special_tokens is None or special_tokens == tokenizer.special_tokens
    ):
        if tokenizer.context is None and model is not None:
            tokenizer.context = context_length(model.config)
        return tokenizer
    context = context_length(model.config) if model is not None else getattr(tokenizer, "context", None)
    return Encoder(tokenizer, True if special_tokens is None else special_tokens, context)


def short_text(text: str, n: int = 40) -> str:
    """``text``, or its opening ending in ``...`` when it is longer than ``n`` characters (for messages)."""
    return text if len(text) <= n else text[: n - 3] + "..."


def text_windows(tokenizer: Any, text: str, seqlen: int = 64) -> list[list[int]]:
    """Non-overlapping token windows of a text, ``seqlen`` ids each (each starting with the tokenizer's
    prefix, see the module docstring); at least two, else an error asking for more text."""
    enc = as_encoder(tokenizer)
    windows = enc.windows(enc.pieces(text), seqlen)
    if len(windows) < 2:
        raise CircuitcutError(f"the text gives {len(windows)} windows of {seqlen} tokens; give more text")
    return windows
