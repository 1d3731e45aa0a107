"""Alias groups from the bundled notes, the user glossary, heading terms and BM25 query expansion."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from ingest.alias_patterns import parse_term_string
from ingest.glossary import (
    alias_groups_from_text,
    apply_removals,
    extract_alias_groups,
    heading_terms,
    load_user_glossary,
    read_user_glossary,
)
from rag.aliases import AliasIndex, member_key, merge_groups
from rag.text import Tokenizer
from rag.types import Document

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def _document(path: Path) -> Document:
    raw = path.read_bytes()
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return Document(
        doc_id=path.name,
        title=path.stem,
        text=text,
        sha256=hashlib.sha256(raw).hexdigest(),
        encoding="utf-8",
        size_bytes=len(raw),
    )


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    return [_document(path) for path in sorted(CORPUS.glob("*.md"))]


@pytest.fixture(scope="module")
def corpus_groups(documents: list[Document]) -> list[list[str]]:
    return extract_alias_groups(documents)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer()


def _group_with(groups: list[list[str]], member: str) -> list[str]:
    """The one group holding `member` (compared case-insensitively)."""
    found = [group for group in groups if member.lower() in {m.lower() for m in group}]
    assert len(found) == 1, f"{member!r} is in {len(found)} groups: {found}"
    return found[0]


def _lower(group: list[str]) -> set[str]:
    return {member.lower() for member in group}


# ------------------------------------------------------------------------------------------ bundled corpus


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        ("LoRA", {"lora", "low-rank adaptation", "低秩适配"}),
        ("梯度弥散", {"梯度弥散", "梯度消失", "vanishing gradient problem"}),
        ("灾难性遗忘", {"灾难性遗忘", "catastrophic forgetting"}),
        ("张量", {"张量", "tensor"}),
        ("代价函数", {"代价函数", "损失函数", "cost function", "loss function"}),
        ("召回率", {"召回率", "recall", "tpr", "真阳率", "命中率", "hit rate", "查全率"}),
        ("batch-size", {"batch-size", "训练选取样本数"}),
        ("强化学习", {"强化学习", "reinforcement learning", "rl", "再励学习", "评价学习", "增强学习"}),
        ("softmax函数", {"softmax函数", "归一化指数函数"}),  # opening sentence "X，又称Y"
        ("WOE", {"woe", "weight of evidence", "证据权重"}),  # "X的全称是Y，即Z"
        ("人工神经网络", {"人工神经网络", "ann", "神经网络", "nn", "类神经网络"}),  # "简称…"
        ("排列语言模型", {"排列语言模型", "permutation language model", "乱序语言模型"}),  # "又称，Y"
        ("数据类型", {"数据类型", "dtype"}),  # "(在 Python 库中通常叫作 dtype )"
        ("准确率", {"准确率", "accuracy"}),  # "准（正）确率（Accuracy）"
        ("弱分类器", {"弱分类器", "weak classifier"}),  # "X，English name，…"
        ("自然语言处理", {"自然语言处理", "nlp", "natural language processing"}),  # "X(Y)：…" definition line
        ("机器学习", {"机器学习", "ml"}),  # "  • 机器学习(ML)" bullet term line
        ("迁移学习", {"迁移学习", "transfer learning"}),  # "**迁移学习（Transfer Learning）**" bold lead
        ("经验回放", {"经验回放", "replay buffer"}),  # "1、经验回放（Replay Buffer）：…"
    ],
)
def test_corpus_groups_hold_the_aliases_the_notes_name(
    corpus_groups: list[list[str]], anchor: str, expected: set[str]
) -> None:
    assert expected <= _lower(_group_with(corpus_groups, anchor))


def test_corpus_pairs_joined_by_and_stay_separate(corpus_groups: list[list[str]]) -> None:
    # "训练(train)和推理(inference)", "过拟合(overfit)与欠拟合(underfit)"
    assert _group_with(corpus_groups, "train") != _group_with(corpus_groups, "inference")
    assert "underfit" not in _lower(_group_with(corpus_groups, "过拟合"))


def test_corpus_ambiguous_acronym_does_not_merge_two_concepts(corpus_groups: list[list[str]]) -> None:
    pretrained = [g for g in corpus_groups if "预训练语言模型" in g]
    permutation = [g for g in corpus_groups if "排列语言模型" in g]
    assert len(pretrained) == 1 and len(permutation) == 1 and pretrained != permutation
    assert "PLM" in pretrained[0] and "PLM" in permutation[0]


def test_corpus_members_are_names_not_code_formulas_or_prose(corpus_groups: list[list[str]]) -> None:
    members = [member for group in corpus_groups for member in group]
    lowered = {member.lower() for member in members}
    assert not lowered & {"np.dot", "np.tensordot", "a,b", "a", "b", "x", "f", "samples", "features", "0 轴"}
    assert not lowered & {"t-1", "唐宇迪", "加噪声", "without context", "英文", "中文", "keras 的 conv2d"}
    for member in members:
        assert member == member.strip() and "  " not in member
        assert not member.replace(".", "").isdigit()
        assert "http" not in member and "(" not in member and ")" not in member
        assert not any(mark in member for mark in "。，；：,;:"), member
        assert len(member) <= 72 and len(member.split()) <= 8, member


def test_corpus_groups_are_distinct_and_only_acronyms_are_shared(corpus_groups: list[list[str]]) -> None:
    seen: dict[str, int] = {}
    for group in corpus_groups:
        keys = [member_key(member) for member in group]
        assert len(keys) >= 2 and len(set(keys)) == len(keys), group
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
    shared = {key for key, count in seen.items() if count > 1}
    assert shared, "expected at least one ambiguous acronym (PLM)"
    assert all(key.isascii() and key.isalnum() and len(key) <= 6 for key in shared), shared


def test_corpus_extraction_is_deterministic(
    documents: list[Document], corpus_groups: list[list[str]]
) -> None:
    assert extract_alias_groups(list(reversed(documents))) == corpus_groups
    assert len(corpus_groups) > 250


# ------------------------------------------------------------------------------------ heading-like strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "梯度弥散(梯度消失)（vanishing gradient problem）",
            [["梯度弥散", "梯度消失", "vanishing gradient problem"]],
        ),
        ("LoRA(LOW-RANK ADAPTATION, 低秩适配)", [["LoRA", "LOW-RANK ADAPTATION", "低秩适配"]]),
        (
            "代价函数(Cost Function)也称损失函数(Loss Function)",
            [["代价函数", "Cost Function", "损失函数", "Loss Function"]],
        ),
        ("训练(train)和推理(inference)", [["训练", "train"], ["推理", "inference"]]),
        (
            "RAG (Retrieval-Augmented Generation)：检索增强型生成",
            [["RAG", "Retrieval-Augmented Generation", "检索增强型生成"]],
        ),
        (
            "logistic 回归(logistic regression,简称 logreg, LR)",
            [["logistic 回归", "logistic regression", "logreg", "LR"]],
        ),
        ("时间序列数据或序列数据", [["时间序列数据", "序列数据"]]),
        ("特异度，特异性specificity(TNR)", [["特异度", "特异性", "specificity", "TNR"]]),
        ("准（正）确率（Accuracy）", [["准确率", "Accuracy"]]),
        (
            "GBDT+LR(梯度提升决策树(Gradient Boosting Decision Tree) +逻辑回归)",
            [["梯度提升决策树", "Gradient Boosting Decision Tree"]],
        ),
        ("循环层(recurrent layer,比如 Keras 的 LSTM 层)", [["循环层", "recurrent layer"]]),
        ("Ｌｏｒａ（低秩适配）", [["Lora", "低秩适配"]]),
    ],
)
def test_parse_term_string_reads_alias_patterns(text: str, expected: list[list[str]]) -> None:
    assert parse_term_string(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "np.dot(a,b)",
        "f(x)",
        "形状 (samples, features)",
        "样本轴(0 轴,因为索引从 0 开始)",
        "输出门O(t-1)",
        "形状 (5,)",
        "数据类型精度(FP32 或 FP16 等)",
        "DCN-v2, DCNMIX, CrossNetMix",
        "机器学习十大常见算法（唐宇迪）",
        "Simple RNN (without context)",
        "二维卷积层(Keras 的 Conv2D )",
        "OpenCompass [官网](https://rank.opencompass.org.cn/home)",
        "初始化网络参数(权重和偏置)",
        "强一致算法： 主从同步",
    ],
)
def test_parse_term_string_ignores_parentheses_that_are_not_aliases(text: str) -> None:
    assert parse_term_string(text) == []


def test_opening_sentences_and_term_lines_are_read_prose_is_not() -> None:
    note = "\n".join(
        [
            "### 点积",
            "    点积，又叫点乘，是一种运算。后来也有人把它(dot product)叫别的。",
            "这段正文里的模型(model)不是别名，张量(tensor)也不是。",
            "### 残差",
            "    残差则是指样本和观察值(样本总体)或回归值(拟合)的差额.",
            "### 条件随机场",
            "    HMM(隐马尔可夫模型)是CRF的一个特例。",  # not about its heading
            "```",
            "### 代码块(code block)",
            "```",
            "- 机器学习(ML)",
            "1. 当损失函数值收敛或达到预设迭代次数时,结束训练",
            "    5、集成学习方法bagging(如随机森林）能有效防止过拟合；",
            "    **迁移学习（Transfer Learning）** 通过在一个任务上学到的知识来改善。",
            "计算机视觉（CV，Computer Vision）：如图像识别。",
        ]
    )
    assert alias_groups_from_text(note) == [
        ["点积", "点乘"],
        ["机器学习", "ML"],
        ["迁移学习", "Transfer Learning"],
        ["计算机视觉", "CV", "Computer Vision"],
    ]


def test_opening_sentence_subject_patterns() -> None:
    note = "\n".join(
        [
            "### WOE",
            "WOE的全称是“Weight of Evidence”，即证据权重。",
            "### BiLSTM",
            "BiLSTM是Bi-directional Long Short-Term Memory的缩写，是由前向LSTM组合而成。",
            "### 反向传播（Backpropagation，缩写为BP）",
            "是“误差反向传播”的简称，是一种常见方法。",
            "### 强化学习",
            "强化学习（Reinforcement Learning, RL），又称再励学习、评价学习或增强学习，是机器学习的范式之一。",
        ]
    )
    assert alias_groups_from_text(note) == [
        ["WOE", "Weight of Evidence", "证据权重"],
        ["BiLSTM", "Bi-directional Long Short-Term Memory"],
        ["反向传播", "Backpropagation", "BP"],
        ["反向传播", "误差反向传播"],
        ["强化学习", "Reinforcement Learning", "RL", "再励学习", "评价学习", "增强学习"],
    ]


# ----------------------------------------------------------------------------------- user glossary, merge


def test_load_user_glossary_reads_separators_and_skips_bad_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "glossary.txt"
    path.write_text(
        "# my aliases\n"
        "\n"
        "RAG, 检索增强生成 ，Retrieval-Augmented Generation\n"
        "微调|fine-tuning = finetune\n"
        "C#\tC sharp  # trailing comment\n"
        "lonely\n"
        "same, SAME\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING):
        groups = load_user_glossary(path)
    assert groups == [
        ["RAG", "检索增强生成", "Retrieval-Augmented Generation"],
        ["微调", "fine-tuning", "finetune"],
        ["C#", "C sharp"],
    ]
    assert sum("ignored" in record.getMessage() for record in caplog.records) == 2


def test_load_user_glossary_missing_file_gives_no_groups(tmp_path: Path) -> None:
    assert load_user_glossary(tmp_path / "absent.txt") == []


def test_minus_lines_remove_wrong_groups_and_members(
    corpus_groups: list[list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The wrong groups the notes yield (issue 17) are removed by "- …" lines; additions still work."""
    path = tmp_path / "glossary.txt"
    path.write_text(
        "- RLHF = Recursive Human Feedback\n"  # a member of one of two groups headed by RLHF
        "- 点积运算\n"  # a whole group
        "－ 样本 = 输入 = input  # full-width minus\n"
        "- 不存在的词\n"
        "输入, input\n",
        encoding="utf-8",
    )
    added, removals = read_user_glossary(path)
    assert added == [["输入", "input"]] and load_user_glossary(path) == added
    assert removals == [["RLHF", "Recursive Human Feedback"], ["点积运算"], ["样本", "输入", "input"], ["不存在的词"]]
    assert _group_with(corpus_groups, "Recursive Human Feedback") and _group_with(corpus_groups, "张量积")
    with caplog.at_level(logging.WARNING):
        kept, records = apply_removals(corpus_groups, removals)
    assert any("不存在的词" in r.getMessage() for r in caplog.records)
    assert not [g for g in kept if "Recursive Human Feedback" in g or "点积运算" in g or "张量积" in g]
    assert "RLHF" in _group_with(kept, "Reinforcement Learning from Human Feedback"), "the right RLHF group stays"
    assert _group_with(kept, "样本") == ["样本", "sample"]
    assert [r["removed"] for r in records] == [["Recursive Human Feedback"], ["点积运算", "张量积"], ["输入", "input"]]
    merged = merge_groups(kept, added)
    assert _group_with(merged, "输入") == ["输入", "input"] and _group_with(merged, "样本") == ["样本", "sample"]


def test_user_glossary_merges_into_corpus_groups(corpus_groups: list[list[str]], tmp_path: Path) -> None:
    path = tmp_path / "glossary.txt"
    path.write_text("灾难性遗忘, 遗忘问题\n我的新词, my new term\n", encoding="utf-8")
    merged = merge_groups(corpus_groups, load_user_glossary(path))
    assert {"灾难性遗忘", "catastrophic forgetting", "遗忘问题"} <= _lower(_group_with(merged, "遗忘问题"))
    assert _group_with(merged, "我的新词") == ["我的新词", "my new term"]
    assert len(merged) == len(corpus_groups) + 1


def test_merge_groups_unions_shared_members_case_and_separator_insensitively() -> None:
    merged = merge_groups(
        [["GPT-3", "生成式预训练模型"], ["x", "y"], ["z", "Z"]], [["单独", "alone"], ["gpt3", "GPT 3 model"]]
    )
    assert merged == [["GPT-3", "生成式预训练模型", "GPT 3 model"], ["x", "y"], ["单独", "alone"]]


def test_merge_groups_keeps_an_ambiguous_acronym_in_both_groups() -> None:
    merged = merge_groups(
        [
            ["预训练语言模型", "PLM", "Pre-trained Language Model"],
            ["排列语言模型", "PLM", "Permutation Language Model"],
        ]
    )
    assert merged == [
        ["预训练语言模型", "PLM", "Pre-trained Language Model"],
        ["PLM", "排列语言模型", "Permutation Language Model"],
    ]
    # An acronym spelled out only once is not ambiguous: it links the groups.
    assert merge_groups([["PEFT", "Parameter-Efficient Fine-Tuning"], ["参数高效微调", "PEFT"]]) == [
        ["PEFT", "Parameter-Efficient Fine-Tuning", "参数高效微调"]
    ]


# ------------------------------------------------------------------------------------------- heading terms


def test_heading_terms_splits_headings_into_names() -> None:
    headings = [
        "batch-size（训练选取样本数）",
        "## 2.1 神经网络的训练过程",
        "1.",
        "**召回率recall**，也称为真阳率（TPR）",
        "训练(train)和推理(inference)",
        "SE注意力机制（Squeeze-and-Excitation Networks, SENet）",
        "这是一个非常非常长的标题它远远超过了二十个字符的限制",
    ]
    assert heading_terms(headings) == {
        "训练选取样本数",
        "神经网络的训练过程",
        "召回率",
        "真阳率",
        "训练",
        "推理",
        "注意力机制",
    }
    assert heading_terms(["batch-size（训练选取样本数）"], include_latin=True) == {
        "batch-size",
        "训练选取样本数",
    }
    assert heading_terms(["LoRA(LOW-RANK ADAPTATION, 低秩适配)", "2.1", "a"], include_latin=True) == {
        "LoRA",
        "LOW-RANK ADAPTATION",
        "低秩适配",
    }


# ----------------------------------------------------------------------------------------- query expansion


def test_english_query_gets_the_chinese_name_with_lower_weight(
    corpus_groups: list[list[str]], tokenizer: Tokenizer
) -> None:
    index = AliasIndex(corpus_groups)
    query = "what is catastrophic forgetting"
    tokens = tokenizer.tokenize(query)
    weights, explanation = index.expand_explained(tokens, tokenizer, query)
    assert all(weights[token] == 1.0 for token in tokens)
    chinese = tokenizer.tokenize("灾难性遗忘")
    assert chinese and all(weights[token] == 0.5 for token in chinese)
    assert explanation == [
        {"matched": "Catastrophic Forgetting", "added": ["灾难性遗忘"], "tokens": chinese},
    ]
    assert index.expand(tokens, tokenizer, query) == weights


def test_chinese_query_gets_the_english_name(corpus_groups: list[list[str]], tokenizer: Tokenizer) -> None:
    index = AliasIndex(corpus_groups, expansion_weight=0.3)
    query = "梯度消失怎么解决"
    tokens = tokenizer.tokenize(query)
    weights = index.expand(tokens, tokenizer, query)
    assert weights["vanishing"] == weights["gradient"] == weights["problem"] == 0.3
    assert weights["弥散"] == 0.3
    assert all(weights[token] == 1.0 for token in tokens)


def test_gpt3_matches_a_gpt_dash_3_member(tokenizer: Tokenizer) -> None:
    index = AliasIndex([["GPT-3", "第三代生成式预训练变换模型"]])
    for query in ("GPT3 有多少参数", "gpt 3 有多少参数", "Gpt_3有多少参数"):
        weights, explanation = index.expand_explained(tokenizer.tokenize(query), tokenizer, query)
        assert [entry["matched"] for entry in explanation] == ["GPT-3"], query
        assert 0 < weights["变换"] == index.added_weight(len(explanation[0]["tokens"])) < 0.5
    # The member's own spelling is added too, as BM25 sees it in the notes.
    assert index.expand(["gpt3"], tokenizer, "gpt3")["gpt"] > 0


def test_a_group_with_many_names_adds_a_bounded_weight(tokenizer: Tokenizer) -> None:
    few = AliasIndex([["LoRA", "低秩适配"]])
    weights, explanation = few.expand_explained(["lora"], tokenizer, "LoRA")
    added = explanation[0]["tokens"]
    assert 0 < len(added) <= few.group_tokens and all(weights[t] == few.expansion_weight for t in added)

    many = AliasIndex([["强化学习", "RL", "再励学习", "评价学习", "增强学习", "Reinforcement Learning"]])
    weights, explanation = many.expand_explained(["rl"], tokenizer, "RL")
    added = explanation[0]["tokens"]
    assert len(added) > many.group_tokens
    assert sum(weights[t] for t in added) == pytest.approx(many.group_tokens * many.expansion_weight)
    assert all(weights[t] < many.expansion_weight for t in added)


def test_latin_members_match_whole_words_only(tokenizer: Tokenizer) -> None:
    index = AliasIndex([["LoRA", "低秩适配"]])
    assert index.expand_explained(["qlora"], tokenizer, "QLoRA 是什么")[1] == []
    assert index.expand_explained(["lora"], tokenizer, "LoRA是什么")[1][0]["matched"] == "LoRA"


def test_stopwords_single_letters_and_ignored_names_do_not_trigger(tokenizer: Tokenizer) -> None:
    index = AliasIndex(
        [["C", "C语言"], ["the", "定冠词"], ["一", "one"], ["2023", "二零二三"], ["模型", "model"]],
        ignore=["模型"],
    )
    for query in ("what is C", "the b c", "一 2023", "这个模型怎么样"):
        tokens = tokenizer.tokenize(query)
        weights, explanation = index.expand_explained(tokens, tokenizer, query)
        assert explanation == [] and weights == dict.fromkeys(tokens, 1.0), query
    assert index.expand_explained(["语言"], tokenizer, "C语言")[1][0]["matched"] == "C语言"


def test_a_name_inside_a_longer_matched_name_does_not_fire(
    corpus_groups: list[list[str]], tokenizer: Tokenizer
) -> None:
    index = AliasIndex(corpus_groups)
    query = "多头注意力机制是什么"
    weights, explanation = index.expand_explained(tokenizer.tokenize(query), tokenizer, query)
    assert [entry["matched"] for entry in explanation] == ["多头注意力机制"]
    assert weights["multi"] == 0.5 and "attention机制" not in weights


def test_tokens_not_in_the_query_text_still_match(tokenizer: Tokenizer) -> None:
    index = AliasIndex([["张量", "tensor"]])
    weights, explanation = index.expand_explained(["张量"], tokenizer, "它是什么")
    assert explanation[0]["matched"] == "张量" and weights["tensor"] == 0.5


def test_expansion_is_capped(tokenizer: Tokenizer) -> None:
    index = AliasIndex([["召回率", "recall", "真阳率", "命中率", "hit rate", "查全率"]], max_added_tokens=2)
    weights = index.expand(["召回率"], tokenizer, "召回率")
    assert len(weights) == 3 and list(weights.values()) == [1.0, 0.5, 0.5]
