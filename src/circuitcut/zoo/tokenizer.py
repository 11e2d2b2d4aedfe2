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
