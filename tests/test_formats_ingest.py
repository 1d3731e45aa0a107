"""PDF, Word, HTML and an Obsidian vault ingested beside a bundled note and a folder of bad files, then searched,
asked and served over HTTP: pages in citations, tag and folder filters, aliases from front matter, backlinks,
the original files, and uploads of every format."""

from __future__ import annotations

import codecs
import os
import shutil
from collections.abc import Iterator
from urllib.parse import quote

import format_samples as fs
import pytest
from conftest import CORPUS
from live import LiveServer, assert_error

from ingest.pipeline import IngestSummary, run_ingest
from rag.api import create_app
from rag.bench.formats import pdf_bytes
from rag.config import Settings
from rag.engine import Engine
from rag.index import IndexStore

PDF = "读书笔记.pdf"
DOCX = "报告.docx"
HTML = "cnn.html"
ATTENTION = "vault/概念/自注意力.md"
GRADIENT = "vault/项目/梯度下降笔记.md"
PLAN = "vault/项目/子项目/计划.md"
NOTE = "python-for-ai.md"
BAD = {
    "bad/加密.pdf": "encrypted",
    "bad/扫描.pdf": "no text layer",
    "bad/截断.pdf": "truncated",
    "bad/炸弹.docx": "zip bomb",
    "bad/big.pdf": "too large",
    "bad/其实是笔记.pdf": "not PDF",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, base_settings: Settings, embedder, corpus_index) -> tuple[Settings, IngestSummary]:
    """The corpus ingested once for the module, in a data dir sharing the converted model and embedding cache."""
    root = tmp_path_factory.mktemp("formats")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / PDF).write_bytes(fs.good_pdf())
    (corpus / DOCX).write_bytes(fs.good_docx())
    (corpus / HTML).write_bytes(fs.web_page())
    fs.make_vault(corpus)
    shutil.copyfile(CORPUS / NOTE, corpus / NOTE)
    (corpus / "bad").mkdir()
    (corpus / "bad" / "加密.pdf").write_bytes(fs.encrypted_pdf())
    (corpus / "bad" / "扫描.pdf").write_bytes(fs.scanned_pdf())
    (corpus / "bad" / "截断.pdf").write_bytes(fs.truncated_pdf())
    (corpus / "bad" / "炸弹.docx").write_bytes(fs.zip_bomb())
    (corpus / "bad" / "big.pdf").write_bytes(pdf_bytes([("p", fs.LONG)] * 40))  # ~60 KB, over the 50 KB limit
    (corpus / "bad" / "其实是笔记.pdf").write_text("# 一篇笔记\n\n扩展名不对。\n", encoding="utf-8")
    data = root / "data"
    (data / "cache").mkdir(parents=True)
    os.symlink(base_settings.models_dir.resolve(), data / "models")
    shutil.copy(base_settings.cache_dir / "embeddings.sqlite", data / "cache" / "embeddings.sqlite")
    settings = Settings(_env_file=None, data_dir=data, corpus_dir=corpus, max_pdf_mb=0.05)
    return settings, run_ingest(settings, embedder=embedder)


@pytest.fixture(scope="module")
def engine(setup, embedder) -> Engine:
    settings, _ = setup
    eng = Engine(settings, embedder=embedder)
    eng.load()
    return eng


@pytest.fixture(scope="module")
def server(setup, engine: Engine) -> Iterator[LiveServer]:
    settings, _ = setup
    with LiveServer(create_app(settings, engine=engine)) as live:
        yield live


# ------------------------------------------------------------------------------------------------ ingest


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_ingested(setup) -> None:
    settings, summary = setup
    assert summary.published
    reasons = {s.path: s.reason for s in summary.skipped}
    assert set(reasons) == set(BAD)
    for path, reason in BAD.items():
        assert reason in reasons[path], (path, reasons[path])
    assert sorted(summary.added) == sorted([PDF, DOCX, HTML, ATTENTION, GRADIENT, PLAN, NOTE])


def test_every_chunk_is_a_slice_of_its_converted_text_and_headings_are_paths(setup) -> None:
    settings, _ = setup
    with IndexStore.from_settings(settings).load() as index:
        paths: dict[str, set[tuple[str, ...]]] = {}
        for chunk in index.all_chunks_iter():
            document = index.document(chunk.doc_id)
            assert document is not None
            assert document.text[chunk.start : chunk.end] == chunk.text
            paths.setdefault(chunk.doc_id, set()).add(chunk.heading_path)
            for hidden in ("TRACKER", "INLINE-SCRIPT", "<script", "内部资料", "私人批注"):
                assert hidden not in chunk.text and hidden not in chunk.index_text
        pdf = index.document(PDF)
        assert pdf is not None and pdf.converter == "pdf" and len(pdf.page_starts) == 2
    assert paths[PDF] == {(fs.CHAPTER_1,), (fs.CHAPTER_2,)}
    assert ("Transformer 架构", "编码器") in paths[DOCX]
    assert ("卷积神经网络入门", "池化层") in paths[HTML]


def test_a_second_ingest_with_nothing_changed_publishes_nothing(setup, embedder) -> None:
    settings, first = setup
    again = run_ingest(settings, embedder=embedder)
    assert not again.published and again.version == first.version


def test_an_answer_from_the_second_page_is_cited_with_page_2(engine: Engine) -> None:
    answer = engine.ask("多头注意力中每个头的维度是多少？")
    assert not answer.refused, answer.text
    pages = {c.page for c in answer.citations if c.doc_id == PDF}
    assert pages == {2}
    # notes have no pages
    assert all(c.page is None for c in answer.citations if c.doc_id != PDF)


def test_a_front_matter_alias_expands_a_query(engine: Engine) -> None:
    assert any({"自注意力笔记", "SelfAttn", "自注意机制"} <= set(group) for group in engine.glossary())
    expanded = engine.search("SelfAttn", mode="bm25", expansion=True, explain=True)
    plain = engine.search("SelfAttn", mode="bm25", expansion=False)
    assert any(e["matched"] == "SelfAttn" for e in expanded.explanation["expansions"])
    assert ATTENTION in {h.chunk.doc_id for h in expanded.hits}
    assert not plain.hits  # the alias is in the front matter only, never in the indexed text


def test_tag_and_folder_filters_narrow_search(engine: Engine) -> None:
    everything = {h.chunk.doc_id for h in engine.search("注意力机制", top_k=10).hits}
    assert len(everything) > 1
    tagged = engine.search("注意力机制", top_k=10, tags=["nlp"])  # nested tag nlp/transformer
    assert tagged.hits and {h.chunk.doc_id for h in tagged.hits} == {ATTENTION}
    folder = engine.search("梯度下降", top_k=10, path_prefix="vault/项目/")
    assert folder.hits and {h.chunk.doc_id for h in folder.hits} <= {GRADIENT, PLAN}
    assert not engine.search("梯度下降", tags=["没有这个标签"]).hits


def test_links_and_backlinks_show_on_the_document(engine: Engine) -> None:
    gradient = engine.document(GRADIENT)
    assert [link["doc_id"] for link in gradient["links"]] == [ATTENTION]
    assert [b["doc_id"] for b in gradient["backlinks"]] == [ATTENTION, PLAN]
    assert gradient["backlinks"][0]["title"] == "自注意力笔记"
    attention = engine.document(ATTENTION)
    assert {"doc_id": "不存在的笔记", "title": None, "exists": False} in attention["links"]
    assert attention["tags"] == ["深度学习", "nlp/transformer", "重要"]


# --------------------------------------------------------------------------------------------------- API


def test_original_files_are_served_with_type_and_disposition(setup, server: LiveServer) -> None:
    settings, _ = setup
    with server.client() as client:
        pdf = client.get(f"/documents/{quote(PDF)}/original")
        assert pdf.status_code == 200 and pdf.content == (settings.corpus_dir / PDF).read_bytes()
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"].startswith("inline;")
        assert quote(PDF) in pdf.headers["content-disposition"]
        page = client.get(f"/documents/{quote(HTML)}/original")
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-disposition"].startswith("attachment;")
        assert page.headers["content-security-policy"] == "sandbox"
        note = client.get(f"/documents/{quote(GRADIENT)}/original")
        assert note.text == fs.NOTE_GRADIENT  # the file as it lies, front matter included
        assert note.headers["content-type"] == "text/markdown; charset=utf-8"
        assert_error(client.get("/documents/nope.pdf/original"), 404)
        shown = client.get(f"/documents/{quote(PDF)}").json()
        assert shown["original_url"] == f"/documents/{quote(PDF)}/original"
        assert shown["pages"] == 2 and {c["page"] for c in shown["chunks"]} == {1, 2}
        listed = {d["doc_id"]: d for d in client.get("/documents").json()["documents"]}
        assert listed[PDF]["format"] == "pdf" and listed[ATTENTION]["tags"] == ["深度学习", "nlp/transformer", "重要"]


def test_api_filters_pages_and_no_script(server: LiveServer) -> None:
    with server.client() as client:
        hits = client.post("/search", json={"query": "注意力机制", "tags": ["nlp"], "top_k": 10}).json()["hits"]
        assert hits and {h["chunk"]["doc_id"] for h in hits} == {ATTENTION}
        hits = client.post("/search", json={"query": "梯度下降", "path_prefix": "vault/项目/"}).json()["hits"]
        assert hits and all(h["chunk"]["doc_id"].startswith("vault/项目/") for h in hits)
        answer = client.post("/ask", json={"question": "多头注意力中每个头的维度是多少？"}).json()
        assert {c["page"] for c in answer["citations"] if c["doc_id"] == PDF} == {2}
        page = client.post("/search", json={"query": "卷积神经网络 池化层"})
        for hidden in ("TRACKER", "INLINE-SCRIPT", "<script"):
            assert hidden not in page.text


def test_upload_accepts_the_new_formats_by_content(setup, server: LiveServer) -> None:
    settings, _ = setup
    text = "# 上传的笔记\n\n用 UTF-16 保存。\n"
    with server.client() as client:
        def upload(name: str, data: bytes):
            return client.post("/documents", files={"file": (name, data)})

        made = upload("上传.pdf", fs.good_pdf())
        assert made.status_code == 201, made.text
        assert made.json()["format"] == "pdf" and made.json()["encoding"] == "binary"
        assert upload("上传.docx", fs.good_docx()).json()["format"] == "docx"
        assert upload("上传.html", fs.web_page()).json()["format"] == "html"
        utf16 = upload("utf16.md", codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
        assert utf16.status_code == 201 and utf16.json()["encoding"] == "utf-16"
        assert "OCR" in assert_error(upload("扫描.pdf", fs.scanned_pdf()), 400)["message"]
        assert_error(upload("假的.pdf", "# 笔记".encode()), 400)
        assert_error(upload("bomb.docx", fs.zip_bomb()), 400)
        assert_error(upload("nobom.md", text.encode("utf-16-le")), 400)
        assert_error(upload("glossary.txt", "注意力, attention\n".encode()), 400)
        assert_error(upload("big.pdf", pdf_bytes([("p", fs.LONG)] * 40)), 413)
    for refused in ("扫描.pdf", "假的.pdf", "bomb.docx", "nobom.md", "glossary.txt", "big.pdf"):
        assert not (settings.corpus_dir / refused).exists()
