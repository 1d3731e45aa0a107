"""Discovery and decoding of notes: encodings, skipped files, symlinks, hidden files."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.loading import decode, discover, document_title

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
NOTE = "# 机器学习笔记\n\n梯度下降是一种优化算法，沿负梯度方向更新参数。\r\n学习率控制步长。\n"


# --------------------------------------------------------------------------------------------------
# decode
# --------------------------------------------------------------------------------------------------


def test_utf8_is_decoded_verbatim_including_crlf() -> None:
    assert decode(NOTE.encode("utf-8")) == (NOTE, "utf-8")


def test_gbk_note_is_detected_and_not_misread() -> None:
    text, encoding = decode(NOTE.encode("gbk"))
    assert (text, encoding) == (NOTE, "gb18030")


def test_gbk_bytes_that_are_also_valid_utf8_are_read_as_gbk() -> None:
    # The GBK bytes of these hanzi happen to be valid two-byte UTF-8 ("һΪ֮": Cyrillic, Greek, Armenian).
    note = "# 一为之\n"
    raw = note.encode("gbk")
    assert raw.decode("utf-8") != note  # the trap: a naive UTF-8-first decoder accepts these bytes
    assert decode(raw) == (note, "gb18030")


@pytest.mark.parametrize("note", ["café résumé naïve", "привет, мир", "α, β 与 γ", "αβγ δ"])
def test_utf8_single_script_text_is_not_taken_for_gbk(note: str) -> None:
    assert decode(note.encode("utf-8")) == (note, "utf-8")


def test_gb18030_four_byte_characters() -> None:
    note = "# 笔记 😀\n罕见字：𠀀 和欧元符号 €。\n"
    raw = note.encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert decode(raw) == (note, "gb18030")


def test_utf8_bom_is_stripped() -> None:
    text, encoding = decode(b"\xef\xbb\xbf" + NOTE.encode("utf-8"))
    assert (text, encoding) == (NOTE, "utf-8-sig")


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom(codec: str) -> None:
    raw = ("\ufeff" + NOTE).encode(codec)
    assert b"\x00" in raw  # UTF-16 is full of NUL bytes, yet it is text
    assert decode(raw) == (NOTE, "utf-16")


def test_nul_bytes_are_binary() -> None:
    with pytest.raises(ValueError, match="binary"):
        decode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")


def test_many_control_characters_are_binary() -> None:
    with pytest.raises(ValueError, match="binary"):
        decode(bytes(range(1, 32)) * 20 + b"some text")


@pytest.mark.parametrize("raw", [b"caf\xe9", b"\x80abc", "中文".encode("big5") + b"\xff"])
def test_undecodable_bytes_raise(raw: bytes) -> None:
    with pytest.raises(ValueError, match="undecodable"):
        decode(raw)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=300))
def test_any_utf8_text_round_trips_unless_gbk_is_clearly_meant(text: str) -> None:
    assume(not text.startswith("\ufeff"))  # that is a UTF-8 BOM, stripped on purpose
    decoded, encoding = decode(text.encode("utf-8"))
    if encoding == "utf-8":
        assert decoded == text
    else:  # only the "jumble of two-byte letters" case may be re-read, and then as all-CJK text
        assert encoding == "gb18030"
        assert all(ord(ch) < 0x800 for ch in text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=1, max_size=50))
def test_any_gbk_hanzi_text_decodes_back(text: str) -> None:
    try:
        raw = ("# " + text + "\n").encode("gbk")
    except UnicodeEncodeError:
        return  # a few unified ideographs have no GBK code
    # Bytes valid as UTF-8 too are the ambiguous corner covered by the "一为之" test above.
    assume(not _valid_utf8(raw))
    assert decode(raw) == ("# " + text + "\n", "gb18030")


def _valid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# titles
# --------------------------------------------------------------------------------------------------


def test_title_is_first_top_level_heading_else_fallback() -> None:
    assert document_title("intro\n# 标题 #\n## 小节\n", "stem") == "标题"
    assert document_title("## 只有二级\n### 三级\n", "stem") == "只有二级"
    # A glossary of "###" entries with a later "#" has no title heading.
    assert document_title("### 类(class)\n说明\n# reduce_sum\n", "stem") == "stem"
    assert document_title("没有标题\n#hashtag\n    # code comment\n", "stem") == "stem"
    assert document_title("```\n# 代码里的注释\n```\n", "stem") == "stem"
    assert document_title("# **粗体** [链接](http://x.y) 标题\n", "stem") == "粗体 链接 标题"
    # Many "# topic" sections: the first topic is not the note's title (learning-notes.md, "# learning").
    assert document_title("# learning\n正文\n# trl\n## 小节\n# peft\n", "learning-notes") == "learning-notes"


# --------------------------------------------------------------------------------------------------
# discover
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A corpus with every kind of file discover must handle, plus an outside directory."""
    corpus = tmp_path / "corpus"
    outside = tmp_path / "outside"
    (corpus / "sub" / "deeper").mkdir(parents=True)
    (corpus / ".hiddendir").mkdir()
    outside.mkdir()
    (outside / "secret.md").write_text("# SECRET-OUTSIDE\n不应被读取。\n", encoding="utf-8")

    (corpus / "a.md").write_text("# 笔记A\n内容A。\n", encoding="utf-8")
    (corpus / "sub" / "b.markdown").write_bytes("# 笔记B\n国标编码的内容。\n".encode("gbk"))
    (corpus / "sub" / "deeper" / "c.txt").write_bytes(("\ufeff" + "纯文本 C\n").encode("utf-16-le"))
    (corpus / "UPPER.MD").write_text("大写扩展名\n", encoding="utf-8")
    (corpus / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (corpus / "notes.docx").write_bytes(b"PK\x03\x04")
    (corpus / ".hidden.md").write_text("# 隐藏\n", encoding="utf-8")
    (corpus / ".hiddendir" / "inside.md").write_text("# 隐藏目录\n", encoding="utf-8")
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "blank.txt").write_text(" \n\t\r\n  \n", encoding="utf-8")
    (corpus / "binary.md").write_bytes(b"\x00\x01\x02binary\x00" * 10)
    (corpus / "big.md").write_text("大" * 2000, encoding="utf-8")  # 6000 bytes > 0.005 MB
    (corpus / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    os.symlink(outside / "secret.md", corpus / "link_out.md")
    os.symlink(outside, corpus / "linkdir")
    os.symlink(corpus, corpus / "sub" / "loop")
    os.symlink(corpus / "sub" / "self", corpus / "sub" / "self")
    os.symlink(corpus / "a.md", corpus / "inner_link.md")
    os.mkfifo(corpus / "pipe.md")  # reading it would block forever
    return {"corpus": corpus, "outside": outside}


def test_discover_loads_notes_and_skips_the_rest_with_reasons(
    tree: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ingest.loading"):
        docs, skipped = discover(tree["corpus"], max_file_mb=0.005)

    assert [doc.doc_id for doc in docs] == ["UPPER.MD", "a.md", "sub/b.markdown", "sub/deeper/c.txt"]
    by_id = {doc.doc_id: doc for doc in docs}
    assert by_id["sub/b.markdown"].text == "# 笔记B\n国标编码的内容。\n"
    assert by_id["sub/b.markdown"].encoding == "gb18030"
    assert by_id["sub/deeper/c.txt"].text == "纯文本 C\n"
    assert by_id["a.md"].title == "笔记A"
    assert by_id["UPPER.MD"].title == "UPPER"  # no heading: the file stem

    reasons = {item.path: item.reason for item in skipped}
    assert set(reasons) == {
        "big.md",
        "binary.md",
        "blank.txt",
        "empty.md",
        "inner_link.md",
        "latin1.md",
        "link_out.md",
        "linkdir",
        "pipe.md",
        "sub/loop",
    }
    assert "too large" in reasons["big.md"]
    assert "binary" in reasons["binary.md"]
    assert "empty" in reasons["empty.md"] and "whitespace" in reasons["blank.txt"]
    assert "undecodable" in reasons["latin1.md"]
    assert "not a regular file" in reasons["pipe.md"]
    for link in ("inner_link.md", "link_out.md", "linkdir", "sub/loop"):
        assert "symbolic link" in reasons[link]

    # One warning per skipped file, naming it.
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(messages) == len(skipped)
    for path in reasons:
        assert any(path in message for message in messages)


def test_nothing_outside_the_corpus_is_read(tree: dict[str, Path]) -> None:
    docs, _ = discover(tree["corpus"], max_file_mb=1)
    assert all("SECRET-OUTSIDE" not in doc.text for doc in docs)
    assert all(not doc.doc_id.startswith(("linkdir", "sub/loop")) for doc in docs)
    assert all("隐藏" not in doc.text for doc in docs)  # hidden files and folders


def test_corpus_reached_through_a_symlink_still_works(tree: dict[str, Path], tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    os.symlink(tree["corpus"], alias)
    docs, _ = discover(alias, max_file_mb=1)
    assert "a.md" in [doc.doc_id for doc in docs]


def test_document_metadata(tmp_path: Path) -> None:
    raw = "# 标题\n正文。\r\n".encode()
    (tmp_path / "n.md").write_bytes(raw)
    os.utime(tmp_path / "n.md", (1_700_000_000, 1_700_000_000))
    (doc,), skipped = discover(tmp_path, max_file_mb=1)
    assert skipped == []
    assert doc.sha256 == hashlib.sha256(raw).hexdigest()
    assert doc.size_bytes == len(raw)
    assert doc.mtime == 1_700_000_000
    assert doc.text == raw.decode()  # CRLF kept: offsets index into this text


def test_missing_corpus_is_reported_not_raised(tmp_path: Path) -> None:
    docs, skipped = discover(tmp_path / "nope", max_file_mb=1)
    assert docs == []
    assert len(skipped) == 1 and "does not exist" in skipped[0].reason


def test_bundled_corpus_loads_completely() -> None:
    docs, skipped = discover(CORPUS, max_file_mb=20)
    assert skipped == []
    assert [doc.doc_id for doc in docs] == sorted(path.name for path in CORPUS.glob("*.md"))
    titles = {doc.doc_id: doc.title for doc in docs}
    assert titles["python-for-ai.md"] == "python for AI"
    assert titles["ai-basics-webpage.md"] == "ai-basics-webpage"  # no markdown heading
    assert titles["deep-learning-glossary.md"] == "deep-learning-glossary"  # starts at "###"
    for doc in docs:
        assert doc.encoding == "utf-8"
        assert doc.sha256 == hashlib.sha256((CORPUS / doc.doc_id).read_bytes()).hexdigest()
