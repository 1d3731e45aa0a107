"""The figures `rag eval` prints, on hand-made results: the answer_hit rule and latency by language."""

from __future__ import annotations

from rag.evaluation import QuestionResult, first_sentence, holds_gold, metrics
from rag.text import sentence_spans


def result(latency: float, *, english: bool, answerable: bool = True) -> QuestionResult:
    return QuestionResult(
        id="q", question="?", answerable=answerable, hit_rank=1, refused=False, keyword_coverage=1.0, cited=1,
        cited_correct=1, latency_ms=latency, gate_score=0.9, english=english,
    )


def test_holds_gold_contains_lies_inside_or_shares_most_of_its_characters() -> None:
    gold = ["较大的学习率,可能带来模型的不稳定(振荡)"]
    assert holds_gold("一般来说，较大的学习率,可能带来模型的不稳定(振荡)。[1]", gold)  # contains, marker ignored
    assert holds_gold("可能带来模型的不稳定", gold)  # lies inside
    assert holds_gold("较大的学习率可能带来模型的不稳定", gold)  # a run of >= 60 % of its characters
    assert not holds_gold("学习率(Learning rate)", gold)
    assert not holds_gold("。[1]", gold)  # no words


def test_first_sentence_skips_markers_and_keeps_a_list_number_with_its_item() -> None:
    assert first_sentence("1. 将输入序列转化为矩阵。[1]\n2. 计算点积。") == "1. 将输入序列转化为矩阵。"
    assert first_sentence("学习率太大会振荡。[1] 太小收敛慢。[1]") == "学习率太大会振荡。"


def test_an_ascii_bang_inside_a_formula_or_before_chinese_text_ends_no_sentence() -> None:
    text = "由于遍历 T! 种路径计算量非常大（对于10个词的句子，10!=3628800）。因此只能采样。[1]"
    assert [text[a:b] for a, b in sentence_spans(text)][:2] == [
        "由于遍历 T! 种路径计算量非常大（对于10个词的句子，10!=3628800）。",
        "因此只能采样。",
    ]
    assert first_sentence(text) == "由于遍历 T! 种路径计算量非常大（对于10个词的句子，10!=3628800）。"
    assert holds_gold(first_sentence(text), ["对于10个词的句子，10!=3628800"])
    # English sentences still end at '!' and '?', and a line end still ends one
    english = "It works! Then it stops? Yes."
    assert [english[a:b].strip() for a, b in sentence_spans(english)] == ["It works!", "Then it stops?", "Yes."]
    assert [p for p in ("为什么?\n下一行"[a:b] for a, b in sentence_spans("为什么?\n下一行")) if p.strip()] == [
        "为什么?",
        "下一行",
    ]


def test_the_bang_of_a_markdown_image_ends_no_sentence() -> None:
    # "![alt](url)" split at its "!" left a sentence "!" that an answer quoted as "![1]"
    text = "如图：\n![CLIP 训练过程.gif](https://example.com/a.png)\n它有两个编码器！好。"
    assert [text[a:b].strip() for a, b in sentence_spans(text)] == [
        "如图：",
        "![CLIP 训练过程.gif](https://example.com/a.png)",
        "它有两个编码器！",
        "好。",
    ]


def test_latency_is_reported_for_chinese_and_english_questions_apart() -> None:
    rows = [result(float(ms), english=False) for ms in (10, 20, 30, 40)] + [
        result(float(ms), english=True) for ms in (100, 200)
    ]
    figures = metrics(rows)
    assert figures["latency_chinese_p50_ms"] in (20.0, 30.0) and figures["latency_chinese_p95_ms"] == 40.0
    assert figures["latency_english_p50_ms"] in (100.0, 200.0) and figures["latency_english_p95_ms"] == 200.0
    assert figures["latency_p95_ms"] == 200.0
    only_chinese = metrics(rows[:4])
    assert only_chinese["latency_english_p95_ms"] == 0.0  # none asked: 0, not an error
