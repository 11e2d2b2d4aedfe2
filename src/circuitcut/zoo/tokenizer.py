"""A word-level tokenizer for the synthetic language, built with the ``tokenizers`` library."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from circuitcut.zoo.language import vocabulary


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over :func:`~circuitcut.zoo.language.vocabulary`.

    Words are split on whitespace; every word of the language is one token; anything else maps to
    ``<unk>``. No special tokens are added when encoding (prompts are encoded as written).
    ``save_pretrained(dir)`` writes ``tokenizer.json`` so ``AutoTokenizer.from_pretrained(dir)``
    loads it.
    """
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str) -> None:
    """``save_pretrained`` with a tokenizer class that transformers 4.x and 5.x both know.

    transformers 5 records its new ``TokenizersBackend`` class, which 4.x cannot load; both
    versions load ``PreTrainedTokenizerFast`` from the same ``tokenizer.json``.
    """
    import json
    from pathlib import Path

    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    path.write_text(json.dumps(config, indent=2) + "\n")
