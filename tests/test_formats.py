"""Converters on files made by the tests: PDF (pypdfium2), Word (python-docx), HTML (trafilatura), markdown front
matter and Obsidian vaults; the worker process's limits; what upload accepts. No embedder: see
test_formats_ingest.py for ingest, search and the API end to end."""

from __future__ import annotations

import codecs
from pathlib import Path

import format_samples as fs
import pytest
from conftest import CORPUS

from ingest.chunking import chunk_document
from ingest.converters import CONVERTERS, ConversionError, converter_for
from ingest.converters.graph import alias_groups, resolve_links
from ingest.converters.markdown import convert_markdown
from ingest.converters.service import ConversionService, as_document
from ingest.converters.worker import ConverterProcess, LimitExceeded
from ingest.corpus import read_upload, save_note
from ingest.loading import decode, discover, document_title
from rag.config import Settings
from rag.errors import InvalidInput, PayloadTooLarge
from rag.filters import document_matches
from rag.types import Document


def converted_document(name: str, data: bytes) -> Document:
    converter = converter_for(name)
    assert converter is not None
    return as_document(converter.convert(data, name), converter, name, data, 0.0)


def check_slices(doc: Document) -> list:
    """Chunks of `doc`; every one an exact slice of the converted text."""
    chunks = chunk_document(doc, 300, 60)
    assert chunks
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
    return chunks


# ------------------------------------------------------------------------------------------------- PDF


@pytest.mark.parametrize("outline", [True, False], ids=["outline", "font-sizes"])
def test_pdf_headings_pages_and_paragraphs(outline: bool) -> None:
    doc = converted_document("读书笔记.pdf", fs.good_pdf(outline=outline))
    chunks = check_slices(doc)
    assert doc.title == "机器学习读书笔记"  # the PDF's own title
    assert {c.heading_path for c in chunks} == {(fs.CHAPTER_1,), (fs.CHAPTER_2,)}
    # running header and page-number footer gone; the paragraph cut by the page break is whole again
    assert fs.HEADER not in doc.text and "内部资料" not in doc.text and "第 1 页" not in doc.text
    assert fs.LONG in doc.text
    # the table keeps one row per line
    assert "| 模型 | 头数 | 维度 |\n| Transformer-base | 8 | 512 |" in doc.text
    # pages: the break falls inside the long paragraph, and chapter 2 is on page 2
    assert len(doc.page_starts) == 2 and doc.page_starts[0] == 0
    assert doc.text.index(fs.LONG) < doc.page_starts[1] < doc.text.index(fs.LONG) + len(fs.LONG)
    for chunk in chunks:
        expected_first = 1 if chunk.start < doc.page_starts[1] else 2
        assert chunk.page == expected_first
        assert chunk.page_at(chunk.end - 1) == (1 if chunk.end - 1 < doc.page_starts[1] else 2)
    fact = doc.text.index(fs.PAGE_2_FACT)
    (holding,) = [c for c in chunks if c.start <= fact < c.end and c.heading_path == (fs.CHAPTER_2,)]
    assert holding.page_at(fact) == 2


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (fs.encrypted_pdf, "encrypted"),
        (fs.scanned_pdf, "no text layer"),
        (fs.truncated_pdf, "truncated"),
        (lambda: b"%PDF-1.7\n" + b"\x00garbage" * 50 + b"\n%%EOF\n", "damaged"),
    ],
    ids=["encrypted", "scanned", "truncated", "garbage"],
)
def test_unreadable_pdfs_are_refused_with_the_reason(make, reason: str) -> None:
    with pytest.raises(ConversionError, match=reason):
        CONVERTERS["pdf"].convert(make(), "bad.pdf")


# ------------------------------------------------------------------------------------------------ Word


def test_docx_headings_tables_and_lists() -> None:
    doc = converted_document("报告.docx", fs.good_docx())
    chunks = check_slices(doc)
    assert doc.title == "Transformer 读书报告"
    assert {c.heading_path for c in chunks} >= {
        ("Transformer 架构",),
        ("Transformer 架构", "编码器"),
        ("Transformer 架构", "解码器"),
    }
    assert "| 子层 | 作用 |\n| --- | --- |\n| 多头自注意力 | 建模位置之间的依赖 |" in doc.text
    assert "- 残差连接\n- 层归一化" in doc.text
    assert all(c.page is None for c in chunks)


def test_zip_bomb_named_docx_is_refused_before_unpacking() -> None:
    with pytest.raises(ConversionError, match="zip bomb"):
        CONVERTERS["docx"].convert(fs.zip_bomb(), "bomb.docx")
    with pytest.raises(ConversionError, match="not a Word document"):
        CONVERTERS["docx"].convert(b"PK\x03\x04 not really a zip", "fake.docx")


# ------------------------------------------------------------------------------------------------ HTML


def test_html_keeps_the_article_and_drops_navigation_footer_and_scripts() -> None:
    doc = converted_document("cnn.html", fs.web_page())
    chunks = check_slices(doc)
    assert doc.title == "卷积神经网络入门"
    assert {c.heading_path for c in chunks} == {("卷积神经网络入门",), ("卷积神经网络入门", "池化层")}
    for boilerplate in ("首页", "归档", "关于本站", "版权所有", "TRACKER", "INLINE-SCRIPT", "<script", "window."):
        assert boilerplate not in doc.text


def test_types_are_checked_by_content() -> None:
    assert CONVERTERS["pdf"].sniff(fs.good_pdf()) and not CONVERTERS["pdf"].sniff(b"# a note")
    assert CONVERTERS["docx"].sniff(fs.good_docx()) and not CONVERTERS["docx"].sniff(fs.good_pdf())
    assert CONVERTERS["html"].sniff(fs.web_page()) and not CONVERTERS["html"].sniff(fs.good_pdf())
    assert not CONVERTERS["html"].sniff(b"just text, no markup")


# ---------------------------------------------------------------------------------- markdown and Obsidian


def test_front_matter_is_metadata_and_the_rest_of_a_plain_note_is_untouched() -> None:
    text = "---\ntitle: 笔记\ntags: [a, B]\naliases: 别名一, 别名二\n---\n# 正文\n\n[[1, 2], [3, 4]] 与 %%x%% 保持原样。\n"
    converted = convert_markdown(text, obsidian=False)
    assert converted.text == "# 正文\n\n[[1, 2], [3, 4]] 与 %%x%% 保持原样。\n"
    assert (converted.title, converted.tags, converted.aliases) == ("笔记", ("a", "b"), ("别名一", "别名二"))
    # a note opening with a horizontal rule, or with YAML that is not a mapping, keeps its text
    for kept in ("---\n只是分隔线\n---\n正文\n", "---\n- a\n- b\n---\n正文\n", "---\na: [unclosed\n---\n正文\n"):
        assert convert_markdown(kept, obsidian=False).text == kept


def test_obsidian_syntax_reads_as_obsidian_shows_it(tmp_path: Path) -> None:
    fs.make_vault(tmp_path)
    docs, skipped = discover(tmp_path, max_file_mb=1)
    assert not skipped
    by_id = {d.doc_id: d for d in resolve_links(docs)}
    attention = by_id["vault/概念/自注意力.md"]
    assert attention.title == "自注意力笔记"
    assert attention.tags == ("深度学习", "nlp/transformer", "重要")
    assert attention.aliases == ("SelfAttn", "自注意机制")
    assert "它依赖 梯度下降 训练" in attention.text  # [[target|label]] -> label
    assert "另见 计划 和 不存在的笔记" in attention.text  # [[target]] -> target
    for hidden in ("架构图", "私人批注", "%%", "![[", "SelfAttn", "title:"):
        assert hidden not in attention.text
    assert '"[[不是链接]] #不是标签"' in attention.text  # code is left as it is, and holds no tags
    check_slices(attention)
    # the link graph: resolved by name anywhere in the vault; a loop and a self-link are just edges
    gradient, plan = by_id["vault/项目/梯度下降笔记.md"], by_id["vault/项目/子项目/计划.md"]
    assert attention.links == ("vault/项目/梯度下降笔记.md", "vault/项目/子项目/计划.md", "不存在的笔记")
    assert gradient.links == ("vault/概念/自注意力.md",)
    assert gradient.backlinks == ("vault/概念/自注意力.md", "vault/项目/子项目/计划.md")
    assert attention.backlinks == ("vault/项目/梯度下降笔记.md",)
    assert plan.links == ("vault/项目/子项目/计划.md", "vault/项目/梯度下降笔记.md") and plan.backlinks == (
        "vault/概念/自注意力.md",
    )
    assert plan.tags == ("待办/本周",)
    assert alias_groups(list(by_id.values())) == [["自注意力笔记", "SelfAttn", "自注意机制"]]


def test_tag_and_folder_filters() -> None:
    listed = {"doc_id": "vault/概念/自注意力.md", "tags": ["深度学习", "nlp/transformer"]}
    assert document_matches(listed, ["nlp"], None)  # a parent tag matches a nested one
    assert document_matches(listed, ["#深度学习", "NLP/Transformer"], "vault/概念/")
    assert not document_matches(listed, ["nlp/bert"], None)
    assert not document_matches(listed, ["深度学习", "优化"], None)  # every tag must match
    assert not document_matches(listed, [], "vault/项目/")


def test_bundled_notes_read_exactly_as_before(tmp_path: Path) -> None:
    """The default markdown/txt path: text, title and chunks (ids, spans, heading paths) are what the decoder alone
    gave before converters existed."""
    docs, skipped = discover(CORPUS, max_file_mb=20)
    assert docs and not skipped
    for doc in docs:
        raw = (CORPUS / doc.doc_id).read_bytes()
        text, encoding = decode(raw)
        before = Document(doc.doc_id, document_title(text, Path(doc.doc_id).stem), text, doc.sha256, encoding)
        assert (doc.text, doc.title, doc.encoding) == (before.text, before.title, before.encoding)
        spans = [(c.chunk_id, c.start, c.end, c.heading_path, c.index_text) for c in chunk_document(doc)]
        assert spans == [(c.chunk_id, c.start, c.end, c.heading_path, c.index_text) for c in chunk_document(before)]


# -------------------------------------------------------------------------------------- worker limits


def test_a_file_over_the_time_limit_is_stopped_and_the_next_one_converts() -> None:
    pdf = fs.good_pdf()
    with ConverterProcess(timeout=0.001, memory_mb=1024) as process:
        with pytest.raises(LimitExceeded, match="longer than"):
            process.convert("pdf", pdf, "slow.pdf")
        process.timeout = 60
        assert fs.PAGE_2_FACT in process.convert("pdf", pdf, "next.pdf").text


def test_a_file_over_the_memory_limit_is_refused_and_the_next_one_converts() -> None:
    big = fs.docx_bytes([("p", "内存上限测试的段落，足够长以便解析时分配内存。" * 40)] * 400)
    with ConverterProcess(timeout=60, memory_mb=1) as process:
        with pytest.raises(ConversionError, match="MB"):
            process.convert("docx", big, "big.docx")
        process.memory_mb = 1024
        assert "Transformer" in process.convert("docx", fs.good_docx(), "next.docx").text


def test_conversions_are_cached_by_bytes_and_converter_version(tmp_path: Path, monkeypatch) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", corpus_dir=tmp_path)
    (tmp_path / "a.pdf").write_bytes(fs.good_pdf())
    (tmp_path / "bad.pdf").write_bytes(fs.scanned_pdf())
    with ConversionService(settings) as service:
        assert fs.PAGE_2_FACT in service.document(tmp_path / "a.pdf", "a.pdf").text
        with pytest.raises(ConversionError, match="no text layer"):
            service.document(tmp_path / "bad.pdf", "bad.pdf")
    # a second service finds both answers in the cache: its worker process never starts
    with ConversionService(settings) as service:
        assert fs.PAGE_2_FACT in service.document(tmp_path / "a.pdf", "a.pdf").text
        with pytest.raises(ConversionError, match="no text layer"):
            service.document(tmp_path / "bad.pdf", "bad.pdf")
        assert service._process._proc is None
        # a new version of the PDF converter misses the cache: the file is converted again
        monkeypatch.setattr(CONVERTERS["pdf"], "version", CONVERTERS["pdf"].version + 1)
        assert fs.PAGE_2_FACT in service.document(tmp_path / "a.pdf", "a.pdf").text
        assert service._process._proc is not None


def test_a_file_over_a_limit_is_not_tried_again_until_the_limits_change(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", corpus_dir=tmp_path, convert_timeout=0.001)
    (tmp_path / "a.pdf").write_bytes(fs.good_pdf())
    with ConversionService(settings) as service, pytest.raises(LimitExceeded, match="longer than"):
        service.document(tmp_path / "a.pdf", "a.pdf")
    with ConversionService(settings) as service:  # the next ingest: skipped again, without converting
        with pytest.raises(ConversionError, match="longer than"):
            service.document(tmp_path / "a.pdf", "a.pdf")
        assert service._process._proc is None
    # a full ingest tries again
    with ConversionService(settings, retry_limits=True) as service, pytest.raises(LimitExceeded):
        service.document(tmp_path / "a.pdf", "a.pdf")
    with ConversionService(settings.model_copy(update={"convert_timeout": 60.0})) as service:  # a new limit
        assert fs.PAGE_2_FACT in service.document(tmp_path / "a.pdf", "a.pdf").text


# ------------------------------------------------------------------------------------------------ upload


def test_upload_reads_notes_the_way_ingest_does(tmp_path: Path) -> None:
    text = "# 笔记\n\nUTF-16 编码的笔记。\n"
    found = read_upload("a.md", codecs.BOM_UTF16_LE + text.encode("utf-16-le"), max_bytes=10_000)
    assert found == {"encoding": "utf-16", "format": "markdown"}
    with pytest.raises(InvalidInput, match="ingest could not read"):
        read_upload("b.md", text.encode("utf-16-le"), max_bytes=10_000)  # no BOM: ingest would skip it
    with pytest.raises(InvalidInput, match="front matter"):
        read_upload("c.md", b"---\ntitle: x\n---\n", max_bytes=10_000)
    with pytest.raises(InvalidInput, match="alias list"):
        save_note(tmp_path, "glossary.txt", b"a, b\n", max_bytes=10_000, overwrite=False)
    assert not (tmp_path / "glossary.txt").exists()


def test_upload_checks_type_by_content_and_size_per_format(tmp_path: Path) -> None:
    pdf = fs.good_pdf()
    with pytest.raises(InvalidInput, match="not PDF"):
        read_upload("notes.pdf", "# 其实是笔记".encode(), max_bytes=10_000)
    with pytest.raises(PayloadTooLarge, match="pdf"):
        read_upload("a.pdf", pdf, max_bytes=10**9, limits={"pdf": len(pdf) - 1})
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", corpus_dir=tmp_path)
    limits = {"pdf": 10**7}  # the notes' limit (max_bytes) does not apply to a PDF
    with ConversionService(settings) as service:
        with pytest.raises(InvalidInput, match="OCR"):
            save_note(tmp_path, "scan.pdf", fs.scanned_pdf(), max_bytes=10, overwrite=False, limits=limits, convert=service.convert)
        saved = save_note(tmp_path, "a.pdf", pdf, max_bytes=10, overwrite=False, limits=limits, convert=service.convert)
    assert saved["format"] == "pdf" and (tmp_path / "a.pdf").read_bytes() == pdf
    assert not (tmp_path / "scan.pdf").exists()


def test_bench_measures_conversion_per_mb_of_each_format() -> None:
    from rag.bench.formats import bench_formats

    results = bench_formats(CORPUS, target_mb=0.05)
    assert set(results) == {"pdf", "docx", "html"}
    for figures in results.values():
        assert figures["mb"] > 0 and figures["chars"] > 1000 and figures["seconds_per_mb"] > 0
