"""Fixture files for the format tests, made here: a two-page Chinese PDF with an outline, a running header and a
page-number footer; the same without an outline; broken PDFs; a Word file with Heading 1/2, a list and a table;
a web page with navigation, footer and scripts; a zip bomb named .docx; a mini Obsidian vault."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from rag.bench.formats import Block, docx_bytes, html_bytes, pdf_bytes

HEADER = "机器学习读书笔记 · 内部资料"
CHAPTER_1 = "第一章 梯度下降"
CHAPTER_2 = "第二章 注意力机制"
# A paragraph long enough to run from page 1 onto page 2: Chinese only, so the joined text is exactly this.
LONG = "".join(
    f"第{n}组实验把学习率设为万分之{n}，批大小设为{n * 8}，损失函数在第{n * 40}步附近趋于平稳，验证集上的误差随之下降。"
    for n in range(1, 31)
)
PAGE_2_FACT = "多头注意力中每个头的维度是六十四，八个头的输出拼接后再做一次线性变换。"
PDF_BLOCKS: list[Block] = [
    ("h1", CHAPTER_1),
    ("p", "梯度下降沿着损失函数梯度的反方向更新参数，每一步的大小由学习率决定。"),
    ("p", LONG),
    ("h1", CHAPTER_2),
    ("p", "自注意力让序列中每个位置都能直接关注其他所有位置。" + PAGE_2_FACT),
    ("table", "模型 | 头数 | 维度"),
    ("table", "Transformer-base | 8 | 512"),
]


def good_pdf(*, outline: bool = True) -> bytes:
    return pdf_bytes(PDF_BLOCKS, title="机器学习读书笔记", header=HEADER, outline=outline)


def scanned_pdf() -> bytes:
    """Two pages of drawing and no text: what a scan without OCR looks like."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    for _ in range(2):
        for i in range(20):
            pdf.rect(72, 100 + i * 30, 400, 12, fill=1)
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def encrypted_pdf() -> bytes:
    return pdf_bytes(PDF_BLOCKS[:3], password="secret")


def truncated_pdf() -> bytes:
    data = good_pdf()
    return data[: len(data) // 2]


DOCX_BLOCKS: list[Block] = [
    ("h1", "Transformer 架构"),
    ("p", "Transformer 由编码器和解码器堆叠而成，完全依靠注意力机制建模序列。"),
    ("h2", "编码器"),
    ("p", "编码器的每一层包含多头自注意力和前馈网络两个子层。"),
    ("table", "子层 | 作用"),
    ("table", "多头自注意力 | 建模位置之间的依赖"),
    ("table", "前馈网络 | 逐位置的非线性变换"),
    ("h2", "解码器"),
    ("p", "解码器在编码器的基础上增加了对编码器输出的交叉注意力。"),
]


def good_docx() -> bytes:
    """Heading 1/2, paragraphs, a table and a bulleted list."""
    import docx

    document = docx.Document(io.BytesIO(docx_bytes(DOCX_BLOCKS, title="Transformer 读书报告")))
    document.add_paragraph("残差连接", style="List Bullet")
    document.add_paragraph("层归一化", style="List Bullet")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb(unpacked_mb: int = 60) -> bytes:
    """A .docx-looking archive whose document.xml unpacks to `unpacked_mb` MB of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as part:
            block = b"\0" * (1 << 20)
            for _ in range(unpacked_mb):
                part.write(block)
    return out.getvalue()


HTML_BLOCKS: list[Block] = [
    ("h1", "卷积神经网络入门"),
    ("p", "卷积神经网络是一类专门处理网格结构数据的深度学习模型，它通过局部连接和权值共享大幅减少了参数数量。"),
    ("h2", "池化层"),
    ("p", "池化层对特征图做下采样，最大池化保留局部区域中的最大值，使模型对小的平移更稳健。"),
]


def web_page() -> bytes:
    """A saved page: navigation, an article, a footer, and scripts in the head and inside the article."""
    page = html_bytes(HTML_BLOCKS, title="卷积神经网络入门 - 示例博客")
    return page.replace(b"</article>", b"<script>document.write('INLINE-SCRIPT-TEXT')</script></article>")


# ------------------------------------------------------------------------------------------------- vault

NOTE_ATTENTION = """---
title: 自注意力笔记
tags: [深度学习, nlp/transformer]
aliases:
  - SelfAttn
  - 自注意机制
---
# 自注意力

自注意力的计算复杂度与序列长度的平方成正比，它依赖 [[梯度下降笔记|梯度下降]] 训练。
另见 [[计划]] 和 [[不存在的笔记]]。![[架构图.png]]
%%这是一条私人批注，不应被索引。%%
长序列上可以用稀疏注意力降低开销。 #重要

```python
attention = "[[不是链接]] #不是标签"
```
"""

NOTE_GRADIENT = """---
tags: 优化
---
# 梯度下降笔记

梯度下降的学习率决定每一步更新的大小，回到 [[自注意力]] 可以看到它的用途。
"""

NOTE_PLAN = """# 计划

下周整理 [[计划]] 自身和 [[梯度下降笔记]]。 #待办/本周
"""


def make_vault(root: Path) -> Path:
    """vault/ with .obsidian/, 概念/自注意力.md, 项目/梯度下降笔记.md and 项目/子项目/计划.md (a loop and a self-link)."""
    vault = root / "vault"
    (vault / ".obsidian").mkdir(parents=True)
    (vault / ".obsidian" / "app.json").write_text("{}", encoding="utf-8")
    (vault / "概念").mkdir()
    (vault / "项目" / "子项目").mkdir(parents=True)
    (vault / "概念" / "自注意力.md").write_text(NOTE_ATTENTION, encoding="utf-8")
    (vault / "项目" / "梯度下降笔记.md").write_text(NOTE_GRADIENT, encoding="utf-8")
    (vault / "项目" / "子项目" / "计划.md").write_text(NOTE_PLAN, encoding="utf-8")
    return vault
