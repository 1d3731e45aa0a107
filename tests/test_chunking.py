"""Chunking and cleaning: exact offsets, sections, outline headings, boilerplate, ids, invariants."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest.chunking import chunk_document, chunk_id, heading_texts
from ingest.cleaning import atx_heading, clean_for_index, fenced_blocks, noise_spans, split_lines
from ingest.loading import discover
from rag.types import Chunk, Document

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
WEBPAGE = "ai-basics-webpage.md"


def make_doc(text: str, doc_id: str = "note.md") -> Document:
    return Document(doc_id=doc_id, title="t", text=text, sha256="0" * 64, encoding="utf-8")


def fence_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.lstrip().startswith(("```", "~~~")))


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[Document, list[Chunk]]]:
    docs, skipped = discover(CORPUS, max_file_mb=20)
    assert skipped == []
    return {doc.doc_id: (doc, chunk_document(doc)) for doc in docs}


# --------------------------------------------------------------------------------------------------
# The bundled corpus
# --------------------------------------------------------------------------------------------------


def test_every_corpus_chunk_is_an_exact_slice(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    assert len(corpus) == 5
    for doc, chunks in corpus.values():
        assert chunks, doc.doc_id
        for ordinal, chunk in enumerate(chunks):
            assert doc.text[chunk.start : chunk.end] == chunk.text
            assert chunk.text == chunk.text.strip() and chunk.text
            assert chunk.ordinal == ordinal
            assert chunk.doc_id == doc.doc_id
            assert fence_lines(chunk.text) % 2 == 0  # no fenced block is cut
        assert len({chunk.chunk_id for chunk in chunks}) == len(chunks)
        assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_corpus_chunk_sizes_are_sane(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    sizes = sorted(len(chunk.text) for _, chunks in corpus.values() for chunk in chunks)
    p95 = sizes[int(0.95 * (len(sizes) - 1))]
    print(f"chunks={len(sizes)} min={sizes[0]} median={statistics.median(sizes)} p95={p95} max={sizes[-1]}")
    assert 300 <= len(sizes) <= 1500
    assert 150 <= statistics.median(sizes) <= 500
    assert p95 <= 625  # TAIL_SLACK * chunk_size: the corpus has no over-long sentence or code block
    assert sizes[-1] <= 2 * 500
    # Chunks under 40 characters are single-line sections (a term with a one-line definition, or a bare
    # heading) and must stay rare.
    assert sum(size < 40 for size in sizes) / len(sizes) < 0.05


def test_corpus_chunks_stay_in_their_section(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    """A chunk contains heading lines only at its very start (its own heading, or empty parents')."""
    for doc, chunks in corpus.values():
        for chunk in chunks:
            # Whole lines: a chunk may start after the indentation of "        # comment" in code.
            line_start = doc.text.rfind("\n", 0, chunk.start) + 1
            lines = [line for line in doc.text[line_start : chunk.end].split("\n") if line.strip()]
            flags = [atx_heading(line) is not None for line in lines]
            leading = len(flags) - len(flags[flags.index(False) :]) if False in flags else len(flags)
            assert not any(flags[leading:]), (doc.doc_id, chunk.text[:80])
            assert leading <= len(chunk.heading_path)
            if leading:
                assert atx_heading(lines[leading - 1])[1] == chunk.heading_path[-1]


def test_markdown_heading_paths(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    _, chunks = corpus["python-for-ai.md"]
    paths = {chunk.heading_path for chunk in chunks}
    assert ("python for AI", "术语及概念", "模型架构分类") in paths
    # "## 术语及概念" has no body: it lives on in the path and opens its first subsection's chunk.
    first = next(c for c in chunks if c.heading_path == ("python for AI", "术语及概念", "模型架构分类"))
    assert first.text.startswith("## 术语及概念\n### 模型架构分类")
    assert first.index_text.startswith("python for AI > 术语及概念 > 模型架构分类\n")


def test_glossary_with_inconsistent_levels_keeps_entries_top_level(
    corpus: dict[str, tuple[Document, list[Chunk]]],
) -> None:
    _, chunks = corpus["deep-learning-glossary.md"]
    paths = {chunk.heading_path for chunk in chunks}
    assert ("reduce_sum",) in paths
    # The "###" entries after the stray "# reduce_sum" are not its children.
    assert ("logistic 回归(logistic regression,简称 logreg, LR)",) in paths
    assert not any(len(path) > 1 and path[0] == "reduce_sum" for path in paths)


def test_webpage_note_is_chunked_by_its_outline(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    doc, chunks = corpus[WEBPAGE]
    paths = [chunk.heading_path for chunk in chunks]
    assert ("关键字", "机器学习(ML)") in paths
    assert ("关键字", "梯度下降法(Gradient Descent)") in paths
    assert ("过程和步骤", "神经网络的训练过程") in paths
    assert ("疑问", "如何估算训练大模型所需的 GPU 显存") in paths
    term = next(c for c in chunks if c.heading_path == ("关键字", "神经网络(NN)"))
    assert term.text.startswith("• 神经网络(NN)")
    assert "输入层、隐藏层、输出层" in term.text and "深度神经网络" not in term.text
    # The explanation lines are indented; non-term bullets ("• params 模型参数量") stay plain content.
    assert not any("params 模型参数量" in path for path in paths)


def test_webpage_boilerplate_is_not_indexed(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    doc, chunks = corpus[WEBPAGE]
    assert "Please enable Javascript" in doc.text and "☕" in doc.text and "微信公众号" in doc.text
    for chunk in chunks:
        for junk in ("enable Javascript", "☕", "分钟\n", "微信公众号"):
            assert junk not in chunk.index_text
            assert junk not in chunk.text  # all of these stand at the edges of sections
        assert not chunk.text.startswith(("Please enable", "·", "作者"))
        assert not chunk.text.endswith(("作者", "微信公众号"))
    # The title line between the banner and the reading-time line is content and is kept.
    assert chunks[0].text == "AI 基础知识点" and chunks[0].heading_path == ()


def test_learning_notes_index_text_drops_markup(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    _, chunks = corpus["learning-notes.md"]
    joined = "\n".join(chunk.index_text for chunk in chunks)
    assert "![" not in joined and "](http" not in joined and "juejin-" not in joined
    assert "byteimg" not in joined and "<sub>" not in joined and "**" not in joined
    assert "github.com denoising-diffusion-pytorch" in joined  # a bare URL keeps its readable part
    assert any("CLIP 训练过程" in chunk.index_text for chunk in chunks)  # meaningful image alt text


def test_heading_texts_are_unique_and_complete(corpus: dict[str, tuple[Document, list[Chunk]]]) -> None:
    _, chunks = corpus["python-for-ai.md"]
    texts = heading_texts(chunks)
    assert len(texts) == len(set(texts))
    assert {"python for AI", "术语及概念", "模型架构分类", "数学基础"} <= set(texts)
    assert texts[0] == "python for AI"


# --------------------------------------------------------------------------------------------------
# Chunk ids
# --------------------------------------------------------------------------------------------------


def test_chunk_ids_are_stable_and_independent_of_other_files(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)

    def ids() -> dict[str, list[str]]:
        docs, _ = discover(corpus, max_file_mb=20)
        return {doc.doc_id: [c.chunk_id for c in chunk_document(doc)] for doc in docs}

    first, second = ids(), ids()
    assert first == second
    target = corpus / "python-for-ai.md"
    target.chmod(0o644)
    target.write_text(target.read_text(encoding="utf-8") + "\n## 新增小节\n新内容。\n", encoding="utf-8")
    changed = ids()
    assert changed["python-for-ai.md"] != first["python-for-ai.md"]
    assert changed["python-for-ai.md"][: len(first["python-for-ai.md"])] == first["python-for-ai.md"]
    for doc_id in first:
        if doc_id != "python-for-ai.md":
            assert changed[doc_id] == first[doc_id]


def test_editing_one_section_keeps_other_sections_ids() -> None:
    before = chunk_document(make_doc("# A\n甲的内容。\n# B\n乙的内容。\n# C\n丙的内容。\n"))
    after = chunk_document(make_doc("# A\n甲的内容，改过了，更长一些。\n# B\n乙的内容。\n# C\n丙的内容。\n"))
    assert before[0].chunk_id != after[0].chunk_id
    assert [c.chunk_id for c in before[1:]] == [c.chunk_id for c in after[1:]]
    assert before[1].start != after[1].start  # offsets moved, ids did not


def test_chunk_id_depends_on_path_heading_and_text() -> None:
    base = chunk_id("a.md", ("H",), "text")
    assert len(base) == 16 and int(base, 16) >= 0
    assert base == chunk_id("a.md", ("H",), "text")
    assert (
        len(
            {
                base,
                chunk_id("b.md", ("H",), "text"),
                chunk_id("a.md", ("G",), "text"),
                chunk_id("a.md", ("H",), "text2"),
                chunk_id("a.md", ("H", ""), "text"),
            }
        )
        == 5
    )


def test_identical_chunks_in_one_section_get_distinct_deterministic_ids() -> None:
    text = "# 重复\n" + "\n".join(["同一句话。"] * 5 + ["x" * 40] + ["同一句话。"] * 5) + "\n"
    first = chunk_document(make_doc(text), chunk_size=20, overlap=0)
    second = chunk_document(make_doc(text), chunk_size=20, overlap=0)
    assert len({c.text for c in first}) < len(first)  # there really are duplicate texts
    assert len({c.chunk_id for c in first}) == len(first)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in second]


# --------------------------------------------------------------------------------------------------
# Sections, sizes, overlap
# --------------------------------------------------------------------------------------------------


def test_tiny_sections_are_not_merged() -> None:
    chunks = chunk_document(make_doc("# 父\n## A\n一句话。\n## B\n另一句话。\n"))
    assert [(c.heading_path, c.text) for c in chunks] == [
        (("父", "A"), "# 父\n## A\n一句话。"),
        (("父", "B"), "## B\n另一句话。"),
    ]


def test_heading_without_body_before_a_sibling_is_its_own_chunk() -> None:
    chunks = chunk_document(make_doc("# 空标题\n# 有内容\n内容。\n"))
    assert [(c.heading_path, c.text) for c in chunks] == [
        (("空标题",), "# 空标题"),
        (("有内容",), "# 有内容\n内容。"),
    ]


def test_crlf_and_closing_hashes() -> None:
    text = "# 标题 ##\r\n第一句。\r\n\r\n## 小节\r\n第二句。\r\n"
    chunks = chunk_document(make_doc(text))
    assert [c.heading_path for c in chunks] == [("标题",), ("标题", "小节")]
    assert chunks[0].text == "# 标题 ##\r\n第一句。"
    assert all(not c.text.endswith("\r") for c in chunks)


def test_sections_are_packed_by_sentences_with_overlap() -> None:
    sentences = [f"这是第{i}句话，用来测试分块。" for i in range(60)]
    text = "# 长节\n" + "".join(sentences) + "\n# 下一节\n短。\n"
    chunks = chunk_document(make_doc(text), chunk_size=100, overlap=40)
    long = [c for c in chunks if c.heading_path == ("长节",)]
    assert len(long) > 5
    for chunk in long:
        assert len(chunk.text) <= 125
        assert chunk.text.endswith("。")  # cut at sentence ends only
    for a, b in zip(long, long[1:], strict=False):
        shared = a.end - b.start
        assert 0 < shared <= 40  # whole sentences of overlap
        assert text[b.start : a.end].endswith("。")
    assert chunks[-1].heading_path == ("下一节",) and chunks[-1].start >= long[-1].end


def test_zero_overlap_tiles_the_section() -> None:
    text = "# 节\n" + "".join(f"句子{i}。" for i in range(200))
    chunks = chunk_document(make_doc(text), chunk_size=60, overlap=0)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.end <= b.start and not text[a.end : b.start].strip()


def test_overlong_sentence_is_cut() -> None:
    text = "# 节\n" + "很长的句子没有标点" * 200 + "\n"
    chunks = chunk_document(make_doc(text), chunk_size=100, overlap=20)
    assert len(chunks) > 10
    assert max(len(c.text) for c in chunks) <= 125


def test_fenced_code_is_never_split_and_hides_headings() -> None:
    code = "```python\n# 这不是标题\ndef f():\n    return 1。\n" + "x = 1。\n" * 30 + "```"
    text = f"# 代码\n说明。\n\n{code}\n\n后记。\n"
    chunks = chunk_document(make_doc(text), chunk_size=100, overlap=30)
    assert {c.heading_path for c in chunks} == {("代码",)}
    assert any(c.text == code for c in chunks)  # longer than chunk_size, kept whole as its own chunk
    assert all(fence_lines(c.text) % 2 == 0 for c in chunks)


def test_heading_joins_a_big_code_block_instead_of_standing_alone() -> None:
    code = "```\n" + "x = 1\n" * 30 + "```"
    chunks = chunk_document(make_doc(f"# 代码\n{code}\n"), chunk_size=100, overlap=30)
    assert [c.text for c in chunks] == [f"# 代码\n{code}"]


def test_huge_code_block_is_split_at_line_ends() -> None:
    body = "".join(f"value_{i} = compute({i})\n" for i in range(200))
    text = f"# 代码\n~~~\n{body}~~~\n"
    chunks = chunk_document(make_doc(text), chunk_size=200, overlap=0)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk.text) <= 600
        assert text[chunk.end] == "\n" or chunk.end == len(text.rstrip())  # ends at a line end


def test_unclosed_fence_runs_to_the_end() -> None:
    text = "# 前\n文字。\n```\n# 在代码里\n还在代码里。\n"
    chunks = chunk_document(make_doc(text))
    assert [c.heading_path for c in chunks] == [("前",)]
    assert chunks[0].text == text.strip()


def test_table_rows_are_never_split() -> None:
    rows = [f"| 模型{i} | 第一句。第二句！第三句？ | 说明{i}。 |" for i in range(20)]
    text = "# 表格\n| 名称 | 描述 | 备注 |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"
    chunks = chunk_document(make_doc(text), chunk_size=120, overlap=40)
    assert len(chunks) > 3
    for chunk in chunks:
        for line in chunk.text.split("\n"):
            assert line.startswith(("# ", "|")) and (line.endswith("|") or line.startswith("# "))


def test_outline_and_bullet_terms_without_markdown_headings() -> None:
    text = (
        "网站标题\n\n1. 概念\n\n  • 张量(Tensor)\n\n    多维数组。\n\n    可以在 GPU 上计算。\n\n"
        "  • 梯度\n    函数变化最快的方向。\n\n总结一下概念部分。\n\n"
        "2. 步骤\n\n2.1 训练\n\n  1. 准备数据\n  2. 训练模型\n\n"
        "3. 列表不是大纲\n这一行紧跟着，所以上一行是列表项。\n"
    )
    chunks = chunk_document(make_doc(text))
    assert [(c.heading_path, c.text.split("\n")[0]) for c in chunks] == [
        ((), "网站标题"),
        (("概念", "张量(Tensor)"), "1. 概念"),
        (("概念", "梯度"), "• 梯度"),
        (("概念",), "总结一下概念部分。"),  # back at the left margin: the term's explanation ended
        (("步骤", "训练"), "2. 步骤"),
    ]
    # "3. ..." runs on into the next line, so it is list content of "2.1 训练", not a new section.
    assert chunks[-1].text.endswith(
        "1. 准备数据\n  2. 训练模型\n\n3. 列表不是大纲\n这一行紧跟着，所以上一行是列表项。"
    )


def test_markdown_headings_disable_outline_detection() -> None:
    text = "# 真标题\n\n1. 列表项\n\n  • 术语\n    解释。\n"
    chunks = chunk_document(make_doc(text))
    assert [c.heading_path for c in chunks] == [("真标题",)]


def test_noise_inside_a_chunk_stays_in_text_but_not_in_index_text() -> None:
    text = "# 笔记\n第一句。\n分享\n第二句。\n"
    (chunk,) = chunk_document(make_doc(text))
    assert chunk.text == "# 笔记\n第一句。\n分享\n第二句。"
    assert chunk.index_text == "笔记\n笔记\n第一句。\n第二句。"


def test_a_section_of_only_noise_yields_no_chunk() -> None:
    text = "Please enable JavaScript to view the contents\n\n·  ☕ 6 分钟\n\n# 正文\n内容。\n"
    chunks = chunk_document(make_doc(text))
    assert [c.text for c in chunks] == ["# 正文\n内容。"]


def test_empty_and_whitespace_documents() -> None:
    assert chunk_document(make_doc("")) == []
    assert chunk_document(make_doc(" \n\t\r\n ")) == []


def test_invalid_chunk_size() -> None:
    with pytest.raises(ValueError):
        chunk_document(make_doc("x"), chunk_size=0)


# --------------------------------------------------------------------------------------------------
# Cleaning rules
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "Please enable Javascript to view the contents",
        "JavaScript is disabled in your browser.",
        " ·  ☕ 6 分钟",
        "5 min read",
        "阅读时长: 3 分钟",
        "本文共 1200 字，阅读约 6 分钟",
        "分享",
        "  • 分享到 »",
        "本文作者：张三",
        "版权声明：本博客所有文章除特别声明外，均采用 CC BY-NC-SA 4.0 许可协议。",
        "上一篇：Transformer 详解",
        "下一篇",
        "Copyright © 2023 Some Blog",
        "© 2021 张三",
        "All rights reserved.",
        "微信公众号",
        "Powered by Hugo",
    ],
)
def test_boilerplate_lines_are_noise(line: str) -> None:
    text = f"正文第一句。\n{line}\n正文第二句。"
    start = len("正文第一句。\n")
    assert noise_spans(text) == [(start, start + len(line) + 1)]


@pytest.mark.parametrize(
    "line",
    [
        "作者提出了 Transformer 架构。",
        "分享一个训练技巧：学习率预热。",
        "版权问题在大模型训练数据中很重要。",
        "https://github.com/lucidrains/denoising-diffusion-pytorch",
        "训练一个 epoch 需要 6 分钟左右。",
        "下一篇论文会讨论 RLHF。",
        "JavaScript 是一种编程语言。",
        "标签",
        "1. 关键字",
        "# 分享",  # a heading is structure, never noise
    ],
)
def test_meaningful_lines_are_not_noise(line: str) -> None:
    assert noise_spans(f"上文。\n{line}\n下文。") == []


def test_noise_spans_cover_blank_runs_but_not_code() -> None:
    text = "a\n\n\n\nb\n```\n分享\n\n\n\n```\nc\n\nd"
    spans = noise_spans(text)
    assert spans == [(2, 5)]  # the three blank lines after "a"; nothing inside the fence; single blank kept


def test_clean_for_index_rules() -> None:
    assert clean_for_index("![image.png](https://x.com/a.png) 后文") == "后文"
    assert clean_for_index("![CLIP 训练过程.gif](https://x.com/a.gif)") == "CLIP 训练过程"
    assert clean_for_index("见[Gradio 文档](https://www.gradio.app/guides/quickstart)。") == "见Gradio 文档。"
    assert clean_for_index("[jieba](https://github.com/fxsjy/jieba),中文分词") == "jieba,中文分词"
    assert clean_for_index("地址 https://github.com/huggingface/trl ，完") == "地址 github.com trl ，完"
    assert clean_for_index("https://zhuanlan.zhihu.com/p/593896912") == "zhuanlan.zhihu.com"
    assert clean_for_index("https://hrl.boyuai.com/chapter/1/%E5%88%9D%E6%8E%A2/") == "hrl.boyuai.com 初探"
    assert clean_for_index("动作 a<sub>i</sub> 和 <b>状态</b><br>下一行") == "动作 ai 和 状态 下一行"
    assert (
        clean_for_index("特殊符号 <UNK> 和 <s> 与 <prompt,answer> 保留")
        == "特殊符号 <UNK> 和 <s> 与 <prompt,answer> 保留"
    )
    assert clean_for_index("**粗体** 与 *斜体* 与 ~~删除~~ 与 __下划__") == "粗体 与 斜体 与 删除 与 下划"
    assert clean_for_index("reset_after 与 W_i 与 units * (input_dim + units)") == (
        "reset_after 与 W_i 与 units * (input_dim + units)"
    )
    assert clean_for_index("`W_i`：`units * 2` 与 O(m+m\\*t)") == "W_i：units * 2 与 O(m+m*t)"
    assert clean_for_index("## 标题 ##\n> 引用\n- 列表\n  • 圆点") == "标题\n引用\n列表\n圆点"
    assert clean_for_index("| a | b |\n| --- | :-: |\n| 1 | 2 |") == "a b\n1 2"
    assert clean_for_index("```python\nprint(1)\n```") == "print(1)"
    assert clean_for_index("a\x00b\x1bc\u200bd &amp; e\t\tf\n\n\n g") == "a b cd & e f\ng"
    assert clean_for_index("[ref]: https://example.com/x\n正文") == "正文"
    assert (
        clean_for_index("snake__case__name 与 __init__ 与 C # 与 issue #12")
        == "snake__case__name 与 init 与 C # 与 issue #12"
    )
    assert clean_for_index("#hashtag 不是标题\n#\n### 空格后才是 ###") == "#hashtag 不是标题\n空格后才是"


def test_structure_helpers() -> None:
    text = "a\r\n```\n# x\n```\nb"
    lines = split_lines(text)
    assert [text[s:e] for s, e in lines] == ["a\r", "```", "# x", "```", "b"]
    assert fenced_blocks(text, lines) == [(1, 3)]
    assert atx_heading("## 标题 ##") == (2, "标题")
    assert atx_heading("#hashtag") is None and atx_heading("    # code") is None and atx_heading("#") is None
    assert atx_heading("####### seven") is None


# --------------------------------------------------------------------------------------------------
# Properties on arbitrary text
# --------------------------------------------------------------------------------------------------

FRAGMENTS = [
    "# ",
    "## ",
    "### 标题",
    "#### Title ##",
    "\n",
    "\r\n",
    "\n\n",
    "\n\n\n\n",
    "```",
    "```python\n",
    "~~~\n",
    "    ",
    "\t",
    "  • ",
    "- ",
    "* ",
    "1. ",
    "2.1 ",
    "| 表 | 格。行 |\n",
    "|---|---|\n",
    "。",
    ". ",
    "！",
    "？",
    "?",
    ";",
    "Please enable Javascript to view the contents\n",
    "分享\n",
    "·  ☕ 6 分钟\n",
    "作者\n",
    "[链接](http://x.y/a?b)",
    "![image.png](u)",
    "https://example.com/a/b?c=1",
    "<b>",
    "</div>",
    "**",
    "_",
    "`",
    "\x00",
    "\x1b",
    "\x0b",
    "\x1c",
    "\u2028",
    "\ufeff",
    "😀",
    "机器学习",
    "Transformer",
    " ",
    "\u3000",
]
pieces = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(max_size=40),
    st.text(alphabet="中文字abc 。，\n", max_size=80),
    st.text(alphabet=st.sampled_from("长句没有标点abc"), min_size=300, max_size=2500),  # very long line
    # Runs of sentences, so that sections span several chunks and overlap matters.
    st.lists(
        st.sampled_from(["短句。", "A longer English sentence. ", "中等长度的一句话，有逗号。", "\n", "！"]),
        min_size=5,
        max_size=80,
    ).map("".join),
    # Closed fenced blocks, sometimes with heading-like and noise-like lines inside.
    st.text(alphabet="ab #。分享\n", max_size=300).map(lambda body: f"\n```\n{body}\n```\n"),
)
documents = st.lists(pieces, max_size=80).map("".join)


def _covered(text: str, chunks: list[Chunk]) -> list[bool]:
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
    return covered


@settings(max_examples=200, deadline=None)
@given(text=documents, chunk_size=st.integers(20, 400), overlap=st.integers(0, 200))
@example(text="# \x00", chunk_size=20, overlap=0)  # a heading of a control character alone (a CI run found it)
def test_chunking_invariants_on_arbitrary_text(text: str, chunk_size: int, overlap: int) -> None:
    doc = make_doc(text)
    chunks = chunk_document(doc, chunk_size=chunk_size, overlap=overlap)
    effective_overlap = min(overlap, chunk_size // 2)

    for ordinal, chunk in enumerate(chunks):
        assert 0 <= chunk.start < chunk.end <= len(text)
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text.strip() == chunk.text
        assert chunk.ordinal == ordinal
        assert len(chunk.text) <= 3 * chunk_size
        assert "\x00" not in chunk.index_text and "\x1b" not in chunk.index_text
        prefix = " > ".join(chunk.heading_path)
        assert chunk.index_text.startswith(prefix)
    assert len({chunk.chunk_id for chunk in chunks}) == len(chunks)

    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start and a.end <= b.end
        if b.start < a.end:  # overlap only within a section, and bounded
            assert a.heading_path == b.heading_path
            assert a.end - b.start <= effective_overlap

    # Coverage: every visible character outside boilerplate lines is in some chunk.
    covered = _covered(text, chunks)
    noise = [False] * len(text)
    for start, end in noise_spans(text):
        noise[start:end] = [True] * (end - start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not noise[i] and not covered[i]]
    assert not missing, (missing[:5], [text[i] for i in missing[:5]])
    # ...and no chunk starts or ends inside a boilerplate line.
    for chunk in chunks:
        assert not noise[chunk.start] and not noise[chunk.end - 1]

    # Fenced blocks that fit in 3 chunk sizes are never cut by a chunk boundary.
    lines = split_lines(text)
    for first, last in fenced_blocks(text, lines):
        block_start, block_end = lines[first][0], lines[last][1]
        if len(text[block_start:block_end].strip()) > 3 * chunk_size:
            continue
        for chunk in chunks:
            assert not block_start < chunk.start < block_end or not text[block_start : chunk.start].strip()
            assert not block_start < chunk.end < block_end or not text[chunk.end : block_end].strip()


@settings(max_examples=100, deadline=None)
@given(text=documents)
def test_chunking_is_deterministic(text: str) -> None:
    first = chunk_document(make_doc(text), chunk_size=120, overlap=30)
    second = chunk_document(make_doc(text), chunk_size=120, overlap=30)
    assert first == second


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_cleaning_never_raises_and_removes_control_characters(text: str) -> None:
    cleaned = clean_for_index(text)
    assert all(ch == "\n" or not ch.isspace() or ch == " " for ch in cleaned)
    assert not any(ord(ch) < 32 and ch != "\n" for ch in cleaned)
    assert "\n\n" not in cleaned and cleaned == cleaned.strip()
    for start, end in noise_spans(text):
        assert 0 <= start < end <= len(text)
        assert start == 0 or text[start - 1] == "\n"
