"""GGUF in, safetensors out: a tiny Llama written with the gguf package's writer loads through
load_model (file or folder), gives the original logits, exports with save_pretrained, and reloads
with plain transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from circuitcut import load_model
from circuitcut.cli.main import main
from circuitcut.encoding import Encoder
from circuitcut.errors import ModelLoadError
from circuitcut.models import convert
from circuitcut.models.tiny import tiny_model

gguf = pytest.importorskip("gguf", reason="the gguf package (circuitcut[gguf]) is not installed")

#: Hugging Face Llama parameter names -> GGUF tensor names (llama.cpp's naming)
_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest are shifted past 255."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _rotary_interleave(w, n_head: int):
    """llama.cpp stores q/k rows of each head as interleaved rotary pairs (the inverse of what
    transformers undoes on load): [half, 2] instead of [2, half] per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path: Path) -> torch.nn.Module:
    """Write a tiny random Llama (byte-level BPE tokenizer that adds a BOS) as GGUF; return the model."""
    tokens = [*_byte_alphabet(), "<s>", "</s>"]
    model = tiny_model("llama", vocab_size=len(tokens), tie_word_embeddings=False)
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 256 + [3, 3])
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges([])
    w.add_bos_token_id(256)
    w.add_eos_token_id(257)
    w.add_add_bos_token(True)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, name in _NAMES.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if name == "attn_q":
                t = _rotary_interleave(t, cfg.num_attention_heads)
            elif name == "attn_k":
                t = _rotary_interleave(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("gguf")
    original = write_tiny_llama_gguf(folder / "tiny.gguf")
    return folder / "tiny.gguf", original


def test_gguf_file_and_folder_load_with_the_original_weights(written) -> None:
    path, original = written
    x = torch.tensor([[256, 72, 101, 108, 108, 111]])
    for source in (path, path.parent):
        model, tok, adapter = load_model(source)
        assert torch.equal(model(x).logits, original(x).logits)
        assert adapter.n_layers == 2 and adapter.n_kv_heads == 2 and not adapter.tied
        assert Encoder(tok).prefix == (256,)  # the GGUF tokenizer adds its BOS: the policy keeps it


def test_gguf_model_exports_and_reloads_with_plain_transformers(written, tmp_path: Path) -> None:
    path, original = written
    model, tok, _ = load_model(path)
    model.save_pretrained(
        tmp_path / "out"
    )  # transformers 5 refuses this while the GGUF quantizer is attached
    tok.save_pretrained(tmp_path / "out")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    x = torch.tensor([[256, 1, 2, 3]])
    assert torch.equal(back(x).logits, original(x).logits)
    assert getattr(back.config, "quantization_config", None) is None
    assert AutoTokenizer.from_pretrained(tmp_path / "out")("hi")["input_ids"] == tok("hi")["input_ids"]


def test_cli_inspect_reads_a_gguf_path(written, capsys) -> None:
    path, _ = written
    assert main(["inspect", str(path), "--json"]) == 0
    assert '"model_type": "llama"' in capsys.readouterr().out


def test_folder_with_several_gguf_files_asks_for_one(written, tmp_path: Path) -> None:
    path, _ = written
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(path.read_bytes())
    with pytest.raises(ModelLoadError, match=r"holds 2 \.gguf files \(a\.gguf, b\.gguf\); pass the one"):
        load_model(tmp_path)


def test_pickle_only_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a legacy pickle checkpoint
    assert (tmp_path / "pytorch_model.bin").is_file() and not list(tmp_path.glob("*.safetensors"))
    with pytest.raises(
        ModelLoadError, match=r"only pickle checkpoints \(pytorch_model\.bin\).*--allow-pickle"
    ):
        load_model(tmp_path)
    loaded, _, _ = load_model(tmp_path, allow_pickle=True)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_convert_writes_the_gguf_model_as_safetensors(written, tmp_path: Path) -> None:
    path, original = written
    convert(path, tmp_path / "out", progress=False)  # circuitcut convert
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "circuitcut-source.json"} <= files
    assert not any(name.endswith(".gguf") for name in files)
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # plain transformers, no gguf needed
    x = torch.tensor([[256, 1, 2, 3]])
    assert torch.equal(back(x).logits, original(x).logits)
    assert getattr(back.config, "quantization_config", None) is None
