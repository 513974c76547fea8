"""Hugging Face `transformers` baselines built from a config with random weights: nothing is
downloaded (suite/__init__.py keeps the hub offline), nothing is pretrained. The suite's wrapper
embeds the inputs and feeds them as `inputs_embeds`, so the models' token tables are not used
(vocab_size=1 keeps them out of the parameter count)."""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch.nn as nn


def _quiet():
    from transformers.utils import logging

    logging.set_verbosity_error()


class HFDecoder(nn.Module):
    """Wraps a transformers base model: forward(h (B, T, d)) -> (B, T, d); step() uses its KV cache."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind
        self.positions = {"gpt2": "learned", "llama": "rope"}.get(kind)  # recorded per job
        self._drop_token_table()

    def _drop_token_table(self):
        emb = self.model.get_input_embeddings()
        emb.weight.requires_grad_(False)  # unused: inputs arrive as embeddings

    def forward(self, h, state=None):
        return self.model(inputs_embeds=h, use_cache=False).last_hidden_state, None

    def init_step_state(self, batch_size, like):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def step(self, h_t, cache):
        out = self.model(inputs_embeds=h_t.unsqueeze(1), past_key_values=cache, use_cache=True)
        return out.last_hidden_state[:, 0], out.past_key_values


def gpt2(d_model: int, layers: int, heads: int, max_len: int, dropout: float = 0.0) -> HFDecoder:
    _quiet()
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(  # type: ignore[call-arg]  # attn_implementation goes to PretrainedConfig
        vocab_size=1,
        n_positions=max_len,
        n_embd=d_model,
        n_layer=layers,
        n_head=heads,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        attn_implementation="sdpa",
        # GPT-2's tanh-approximated GELU as one kernel: the same function as "gelu_new" (to float
        # rounding), whose eight elementwise ops and their backward took a fifth of a step at d_model 28
        activation_function="gelu_pytorch_tanh",
    )
    return HFDecoder(GPT2Model(config), "gpt2")


def llama(d_model: int, layers: int, heads: int, max_len: int, dropout: float = 0.0) -> HFDecoder:
    """Llama-style decoder: RoPE, RMSNorm, SwiGLU MLP (intermediate size ≈ 8/3 · d, a multiple of 8)."""
    _quiet()
    from transformers import LlamaConfig, LlamaModel

    inter = max(8, round(8 * d_model / 3 / 8) * 8)
    config = LlamaConfig(  # type: ignore[call-arg]  # attn_implementation goes to PretrainedConfig
        vocab_size=1,
        hidden_size=d_model,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_len,
        attention_dropout=dropout,
        attn_implementation="sdpa",
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return HFDecoder(LlamaModel(config), "llama")
