"""The checkpoint's tokenizer as `tokenizer.json` / `tokenizer_config.json` for Hugging Face `tokenizers`.

A Unigram model that reproduces e5.c's tokenizer: the code-point map is compiled into a SentencePiece
`precompiled_charsmap` (a darts-clone double-array trie), then runs of spaces are collapsed, a metaspace is
prepended and spaces become "▁" (no splitting: e5.c runs one Viterbi pass over the whole text).

Known differences from e5.c (both are rare in practice and change only a token or two): `tokenizers` fuses
a run of unknown characters into one <unk> (e5.c emits one per character), and its Precompiled normalizer
maps a short grapheme cluster (< 6 bytes) by its first code point only, dropping the rest when that first
code point is in the map (e.g. "\\r\\n" -> " ", which the space collapse makes equal). Literal "<s>", "</s>",
"<pad>", "<unk>", "<mask>" in text are special tokens here, as in the original Hugging Face tokenizer.
"""

from __future__ import annotations

import base64
import struct
from collections import deque
from typing import Any

import numpy as np

from rag.e5_convert.checkpoint import E5Tokenizer

_METASPACE = "\u2581"
_SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


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
