"""The checkpoint as a Hugging Face `BertModel`: its tensors under BERT's names and its `config.json`.

Post-norm, erf GELU, absolute positions 0..L-1; weights dequantized to float32, zero pooler weights (the
file has none; e5 never uses them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rag.e5_convert.checkpoint import E5Checkpoint, E5Header, E5Tokenizer
from rag.errors import ModelUnavailable

_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_state_dict(ckpt: E5Checkpoint) -> dict[str, np.ndarray]:
    """All tensors under Hugging Face `BertModel` names, float32, plus zero pooler weights."""
    h = ckpt.header
    H, F = h.hidden, h.ffn
    out: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": ckpt.tensor("emb.word", (h.vocab, H)),
        "embeddings.position_embeddings.weight": ckpt.tensor("emb.pos", (h.positions, H)),
        "embeddings.token_type_embeddings.weight": ckpt.tensor("emb.type", (h.token_types, H)),
        "embeddings.LayerNorm.weight": ckpt.tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": ckpt.tensor("emb.ln.b", (H,)),
    }
    shapes = {
        "q": (H, H),
        "k": (H, H),
        "v": (H, H),
        "ao": (H, H),
        "aln": None,
        "fi": (F, H),
        "fo": (H, F),
        "oln": None,
    }
    used = {"emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"}
    for i in range(h.layers):
        for short, hf in _LAYER_NAMES.items():
            w_shape = shapes[short]
            prefix = f"encoder.layer.{i}.{hf}"
            if w_shape is None:  # LayerNorm
                out[f"{prefix}.weight"] = ckpt.tensor(f"l{i}.{short}.w", (H,))
                out[f"{prefix}.bias"] = ckpt.tensor(f"l{i}.{short}.b", (H,))
            else:  # nn.Linear: weight is [out, in], exactly the file's layout
                out[f"{prefix}.weight"] = ckpt.tensor(f"l{i}.{short}.w", w_shape)
                out[f"{prefix}.bias"] = ckpt.tensor(f"l{i}.{short}.b", (w_shape[0],))
            used.update({f"l{i}.{short}.w", f"l{i}.{short}.b"})
    unknown = sorted(set(ckpt.tensors) - used)
    if unknown:
        raise ModelUnavailable(f"The e5 weights file has unexpected tensors: {unknown[:5]}")
    out["pooler.dense.weight"] = np.zeros((H, H), dtype=np.float32)
    out["pooler.dense.bias"] = np.zeros((H,), dtype=np.float32)
    return out


def bert_config(header: E5Header, tok: E5Tokenizer) -> dict[str, Any]:
    """`config.json` for the equivalent `BertModel`."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.positions,
        "type_vocab_size": header.token_types,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
        "pad_token_id": tok.pad,
        "bos_token_id": tok.bos,
        "eos_token_id": tok.eos,
        "classifier_dropout": None,
        "use_cache": True,
        "torch_dtype": "float32",
    }
