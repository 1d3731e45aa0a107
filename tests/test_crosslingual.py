"""Cross-lingual bridging: English phrases linked to the notes' Chinese-only terms (CSLS over term vectors),
first as pure functions over hand-made vectors, then with the real embedder on the bundled corpus."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rag.aliases import AliasIndex, shortens
from rag.answer.sentence_form import count_in_chinese
from rag.answer_types import searched_attribute_names
from rag.config import Settings
from rag.crosslingual import (
    MAX_GLOSS_PHRASES,
    TermBridge,
    blended_translation,
    bridge_terms,
    english_phrases,
    gloss_term,
    glossed_phrases,
    mixed_names,
    mostly_english,
    text_units,
    translated_query,
)
from rag.engine import Engine
from rag.text import Tokenizer, base_forms, singular

# ------------------------------------------------------------------------------------------ pure text


def test_english_phrases_are_runs_of_content_words() -> None:
    assert english_phrases("What does the learning rate mean in SGD?") == [["learning", "rate"], ["sgd"]]
    # a possessive ends a name; CJK, digits and punctuation break runs
    assert english_phrases("OpenAI's Whisper model") == [["openai"], ["whisper", "model"]]
    assert english_phrases("LoRA 的 rank, alpha") == [["lora"], ["rank"], ["alpha"]]
    assert english_phrases("GPT 3 tokens") == [["gpt"], ["tokens"]]
    assert english_phrases("What is it?") == []
    assert english_phrases("") == []


def test_mostly_english() -> None:
    assert mostly_english("What is catastrophic forgetting?")
    assert not mostly_english("什么是灾难性遗忘？")
    assert not mostly_english("LoRA 的秩 r 怎么选")
    assert not mostly_english("1234 ?!")


def test_text_units_count_chinese_characters_latin_words_and_symbols() -> None:
    assert text_units("What is 折扣率?") == 6
    assert text_units("ＬｏＲＡ 的秩") == 3 and text_units("") == 0


def test_blended_translation_weighs_each_part_by_its_length() -> None:
    question, name = np.array([1.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)
    short = blended_translation(question, "Why?", ["折扣率"], [name])  # 2 + 5 units against 3
    long = blended_translation(question, "Why is the discount factor below one?", ["折扣率"], [name])
    assert np.isclose(np.linalg.norm(short), 1.0) and np.isclose(np.linalg.norm(long), 1.0)
    assert short[1] / short[0] == pytest.approx(3 / 7) and long[1] < short[1]
    assert np.allclose(blended_translation(question, "Why?", [], []), question)


def test_translated_query_appends_distinct_names_up_to_a_limit() -> None:
    assert translated_query("What is X?", []) == "What is X?"
    assert translated_query("What is X?", ["甲", "乙", "甲"]) == "What is X? (甲, 乙)"
    assert translated_query("q", [str(i) for i in range(20)], limit=3) == "q (0, 1, 2)"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("models", "model"),
        ("RNNs", "RNN"),
        ("entropies", "entropy"),
        ("losses", "loss"),
        ("batches", "batch"),
        ("loss", "loss"),
        ("corpus", "corpus"),
        ("analysis", "analysis"),
        ("is", "is"),
    ],
)
def test_singular(word: str, expected: str) -> None:
    assert singular(word) == expected


def glossary_matcher(groups: list[list[str]]):
    """The names of `groups` a query matches, in order (what alias expansion reports as matched)."""
    aliases, tokenizer = AliasIndex(groups), Tokenizer()

    def matched(query: str) -> list[str]:
        return [item["matched"] for item in aliases.expand_explained(tokenizer.tokenize(query), tokenizer, query)[1]]

    return matched


def test_glossary_matching_tolerates_english_plurals() -> None:
    matched = glossary_matcher([["循环神经网络", "RNN"], ["语言模型", "Language Model"], ["深度神经网络", "Deep Neural Networks"]])

    assert matched("Why do RNNs forget?") == ["RNN"]
    assert matched("How are language models trained?") == ["Language Model"]
    assert matched("a deep neural network") == ["Deep Neural Networks"]
    assert matched("runs of RNA") == []


def test_an_english_name_is_matched_without_the_word_for_its_kind() -> None:
    matched = glossary_matcher([["梯度爆炸", "exploding gradient problem"], ["损失函数", "loss function"], ["CAP理论", "CAP theorem"]])

    assert matched("What causes exploding gradients?") == ["exploding gradient problem"]
    assert matched("the exploding gradient problem") == ["exploding gradient problem"]
    assert matched("Why is the gradient exploding?") == []  # the words in another order name nothing
    assert matched("Is the loss too high?") == []  # one word left: "loss" is not the loss function
    assert matched("Who proved the theorem about CAP?") == []


def test_glossary_matching_reads_an_ing_form_as_its_name() -> None:
    matched = glossary_matcher([["过拟合", "overfit"], ["微调", "fine-tune"], ["掩码", "mask"], ["唱歌", "sing"]])

    assert matched("How does dropout prevent overfitting?") == ["overfit"]  # overfitt -> overfit
    assert matched("Is fine-tuning expensive?") == ["fine-tune"]  # tun -> tune
    assert matched("What is attention masking?") == ["mask"]
    assert matched("How are masked words chosen?") == []  # a past participle is not the name
    assert matched("What is a string?") == []  # no vowel left to tell ("str")
    assert base_forms("overfitting") == ["overfitt", "overfit", "overfitte"] and base_forms("thing") == []


# ------------------------------------------------------------------------------- TermBridge, by hand

DIM = 8


def unit(*weights: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


def make_bridge(**kwargs) -> tuple[TermBridge, dict[str, np.ndarray]]:
    """Axis 0 = 'discount', 1 = 'reward', 2 = 'ladder'; 'general' leans towards everything (a hub)."""
    groups = [["折扣率", "折扣因子"], ["奖励", "reward"], ["梯子"]]
    vectors = {
        "折扣率": unit(1, 0, 0, 0.3),
        "折扣因子": unit(1, 0, 0, 0.35),
        "奖励": unit(0, 1, 0, 0.3),
        "reward": unit(0, 1, 0, 0.2),
        "梯子": unit(0, 0, 1, 0.3),
        "通用": unit(0.75, 0.75, 0.75, 0.3),  # a heading word, close to everything
        "anchor one": unit(0.6, 0.6, 0.6, 0, 0.5),  # English names, broad like the hub
        "anchor two": unit(0.6, 0.6, 0.6, 0, 0, 0.5),
    }
    groups.append(["anchor one"])
    groups.append(["anchor two"])
    terms = bridge_terms(groups, ["通用"])
    matrix = np.stack([vectors[t] for t in terms])
    phrases = {
        "discount factor": unit(0.95, 0.45, 0.45, 0.3),
        "discount": unit(0.95, 0.4, 0.4, 0.3),
        "factor": unit(0.2, 0.2, 0.2, 1),
        "ladder": unit(0.05, 0.05, 1, 0.3),
        "reward": unit(0, 1, 0, 0.2),
        "weather": unit(0.3, 0.3, 0.3, 0, 0, 0, 1),
    }
    defaults = {"threshold": 0.04, "neighbours": 2}
    return TermBridge(groups, terms, matrix, **{**defaults, **kwargs}), phrases


def fake_embed(phrases: dict[str, np.ndarray]):
    def embed(texts):
        return np.stack([phrases.get(t, unit(0, 0, 0, 0, 0, 0, 0, 1)) for t in texts])

    return embed


def test_bridge_targets_are_chinese_terms_without_an_english_name() -> None:
    bridge, _ = make_bridge()
    assert set(bridge.targets) == {"折扣率", "折扣因子", "梯子", "通用"}  # 奖励 has "reward"
    bridge, _ = make_bridge(exclude={"通用"})
    assert "通用" not in bridge.targets


def test_a_bridge_with_few_english_names_asks_for_everyday_anchors_once() -> None:
    bridge, phrases = make_bridge()  # two English names in its glossary
    assert bridge.needs_anchors
    before = bridge._target_hubness.copy()
    bridge.use_anchors(np.stack([unit(0, 0, 1, 0.3), phrases["weather"]]))  # one sits right by 梯子
    assert not bridge.needs_anchors
    ladder = bridge.targets.index("梯子")
    assert bridge._target_hubness[ladder] > before[ladder]  # 梯子 now counts as close to everyday words


def test_bridge_links_a_phrase_to_its_term_and_discounts_the_hub() -> None:
    bridge, phrases = make_bridge()
    query_vector = phrases["discount factor"]
    raw = {t: float(query_vector @ bridge._targets[i]) for i, t in enumerate(bridge.targets)}
    assert max(raw, key=raw.get) == "通用"  # by raw cosine the hub would win
    links = bridge.link("What does the discount factor mean?", fake_embed(phrases))
    assert [(b.phrase, b.names) for b in links] == [("discount factor", ("折扣率", "折扣因子"))]
    assert links[0].term in links[0].names and links[0].score >= bridge.threshold


def test_bridge_tries_long_phrases_first_and_links_each_word_once() -> None:
    bridge, phrases = make_bridge()
    links = bridge.link("discount factor, and the ladder", fake_embed(phrases))
    assert [b.phrase for b in links] == ["discount factor", "ladder"]


def test_a_long_question_tries_a_bounded_number_of_phrases_two_word_ones_first() -> None:
    bridge, phrases = make_bridge(max_phrases=6)
    tried: list[str] = []

    def embed(texts):
        tried.extend(texts)
        return fake_embed(phrases)(texts)

    links = bridge.link("ladder; red blue green yellow purple orange; discount factor", embed)
    # the six two-word phrases, the last run's included, before any longer phrase or single word ("ladder")
    assert len(tried) == 6 and all(len(p.split()) == 2 for p in tried) and tried[-1] == "discount factor"
    assert [b.phrase for b in links] == ["discount factor"]


def test_bridge_skips_words_the_glossary_matched_and_unrelated_words() -> None:
    bridge, phrases = make_bridge()
    embed = fake_embed(phrases)
    assert bridge.link("the weather", embed) == []
    assert [b.phrase for b in bridge.link("discount factor", embed, skip_words={"factor"})] == ["discount"]
    assert bridge.link("discount factors", embed, skip_words={"discount", "factor"}) == []


def test_a_word_the_notes_contain_or_one_word_of_a_run_is_not_tried_alone() -> None:
    bridge, phrases = make_bridge()
    tried: list[str] = []

    def embed(texts):
        tried.extend(texts)
        return fake_embed(phrases)(texts)

    assert [b.phrase for b in bridge.link("the ladder", embed, known=lambda word: word == "ladder")] == []
    assert tried == []
    assert [b.phrase for b in bridge.link("ladder", embed)] == ["ladder"]  # a run of one word is tried
    tried.clear()
    # inside a run, only the phrases are tried (a lone word needs twice the threshold: the run's phrases
    # link it), except a hyphenated compound, which names one thing
    bridge.link("discount factor", embed)
    assert tried == ["discount factor"]
    tried.clear()
    bridge.link("feed-forward layer", embed)
    assert tried == ["feed-forward layer", "feed-forward"]


def test_a_single_word_needs_twice_the_threshold() -> None:
    bridge, phrases = make_bridge()
    score = bridge.link("ladder", fake_embed(phrases))[0].score
    assert bridge.link("ladder", fake_embed(phrases)) != []
    strict, _ = make_bridge(threshold=score / 2 + 1e-3)
    assert strict.link("ladder", fake_embed(phrases)) == []


def test_a_bridge_without_vectors_links_nothing() -> None:
    bridge = TermBridge([["折扣率"]], [], np.zeros((0, DIM), dtype=np.float32))
    assert len(bridge) == 0
    assert bridge.link("discount factor", lambda texts: np.ones((len(texts), DIM))) == []


# ----------------------------------------------------------------- real embedder, bundled corpus


def test_a_phrase_the_notes_give_as_a_gloss_is_named_by_the_chinese_before_it() -> None:
    texts = [
        "尽管它背后的模型可能使用了指令微调（instruction tuning， 正如 InstructGPT 那样），效果仍差。",
        "在小模型时代，全参数微调（Full Fine-Tuning）毫无压力。",
        "指令微调 (Instruction tuning with Reinforcement Learning) 是 ChatGPT 的做法。",
    ]
    assert glossed_phrases("What is instruction tuning?", texts) == {"instruction tuning": "的模型可能使用了指令微调"}  # up to 12 characters
    # the longest phrase first, its words spelled with a hyphen or none between; a word joins one phrase
    assert glossed_phrases("Why use full fine tuning?", texts) == {"full fine tuning": "全参数微调"}
    # a gloss that goes on ("tuning with …") names something longer than the phrase; one word alone is no gloss
    assert glossed_phrases("What is tuning with reinforcement?", texts[2:]) == {}
    assert glossed_phrases("What is instruction?", texts) == {}
    # a long question is looked up by its first MAX_GLOSS_PHRASES phrases only
    filler = "alpha beta. " * MAX_GLOSS_PHRASES
    assert glossed_phrases(f"{filler}What is instruction tuning?", texts) == {}
    assert "instruction tuning" in glossed_phrases(f"{filler[: -len('alpha beta. ')]}What is instruction tuning?", texts)


def test_a_name_and_its_kind_are_found_where_the_notes_write_the_kind_in_chinese() -> None:
    texts = ["后续的分布式系统设计也都按照CAP理论进行设计。", "Huber损失将 MSE 与 MAE 结合，更稳。"]
    assert mixed_names("What is the CAP theorem?", texts) == {"cap theorem": "CAP理论"}
    assert mixed_names("Why use Huber losses?", texts) == {"huber losses": "Huber损失"}
    # the passages write the kind word in English ("attention mechanism"): the phrase needs no Chinese name
    assert mixed_names("What is the attention mechanism?", ["attention机制根据 query 加权求和的 mechanism。"]) == {}
    assert mixed_names("What is the BASE theory?", texts) == {}  # not written here
    assert mixed_names("What is a CAP design?", texts) == {}  # "design" names no kind
    assert mixed_names("What is the ECAP theorem?", texts) == {}  # a name is matched whole


def test_the_term_before_a_gloss_is_cut_from_its_clause() -> None:
    def known(term: str) -> bool:
        return term in {"指令微调", "层归一化", "微调"}

    assert gloss_term("使用了指令微调", ["使用", "了", "指令微调"], known) == "指令微调"  # after the function word
    assert gloss_term("训练一个大模型", ["训练", "一个", "大模型"], known) == "大模型"
    assert gloss_term("都会应用层归一化", ["都", "会", "应用", "层归一化"], known) == "层归一化"  # a known tail
    assert gloss_term("全参数微调", ["全", "参数", "微调"], known) == "全参数微调"  # not the much shorter 微调


def test_an_english_phrase_the_notes_gloss_finds_its_chinese_term(engine: Engine) -> None:
    # the glossary groups 指令微调 with "Flan" only: the notes gloss "instruction tuning" in prose
    result = engine.search("What is instruction tuning?", explain=True)
    e = result.explanation
    assert e is not None
    glossed = [item for item in e["expansions"] if "named_in_notes" in item]
    assert [(item["matched"], item["added"]) for item in glossed] == [("instruction tuning", ["指令微调"])]
    assert "指令微调" in e["translated_query"]
    assert "指令微调" in result.hits[0].chunk.heading_path[-1]
    result = engine.search("What is the CAP theorem?", explain=True)
    assert result.explanation is not None
    named = [(item["matched"], item["added"]) for item in result.explanation["expansions"] if "named_in_notes" in item]
    assert named == [("cap theorem", ["CAP理论"])] and result.hits[0].chunk.heading_path[-1] == "CAP理论"
    assert not engine.ask("What is the CAP theorem?").refused  # refused before (reader 0.60): "theorem" was unread
    answer = engine.ask("What is instruction tuning?")
    assert not answer.refused and "指令微调" in answer.text  # refused before: prompt tuning was all it found


def test_an_english_attribute_word_is_searched_by_the_chinese_section_names(engine: Engine) -> None:
    # "limitations" is nowhere in the notes; their DALL·E 2 note has a section "## 不足"
    assert {"不足", "缺点"} <= set(searched_attribute_names("limitations"))
    assert searched_attribute_names("definition") == () and searched_attribute_names("dall") == ()
    for question in ("What are the limitations of DALL·E 2?", "What are the weaknesses of DALL·E 2?"):
        result = engine.search(question, explain=True)
        assert result.explanation is not None
        searched = [item for item in result.explanation["expansions"] if item.get("attribute")]
        assert len(searched) == 1 and "不足" in searched[0]["added"]
        assert all(result.explanation["weighted_query"][t] < 1.0 for t in searched[0]["tokens"])
        assert result.hits[0].chunk.heading_path == ("DALL·E 2", "不足")
    # without the expansion, the section is not what ranks first
    plain = engine.search("What are the limitations of DALL·E 2?", expansion=False)
    assert plain.hits[0].chunk.heading_path != ("DALL·E 2", "不足")


def test_an_english_verb_of_remedy_is_searched_by_the_notes_words_for_a_fix(engine: Engine) -> None:
    # "reduce" is a word of the notes only in code ("reduce_sum"): "How do you reduce overfitting?" was refused,
    # and "How to fix underfitting?" opened with a sentence that merely names a remedy
    # any line of the notes' list of remedies for overfitting ("防止神经网络过拟合的常用方法包括:") opens well
    overfitting = ("防止过拟合", "获取更多的训练数据", "减小网络容量", "添加权重正则化", "添加 dropout", "交叉检验")
    for question, openings in (
        ("How do you reduce overfitting?", overfitting),
        ("How to prevent overfitting?", overfitting),
        ("How to fix underfitting?", ("欠拟合的解决方法",)),
    ):
        result = engine.search(question, explain=True)
        assert result.explanation is not None
        searched = [item for item in result.explanation["expansions"] if item.get("attribute")]
        assert len(searched) == 1 and {"解决", "防止"} <= set(searched[0]["added"]), question
        assert all(result.explanation["weighted_query"][t] < 1.0 for t in searched[0]["tokens"])
        answer = engine.ask(question)
        assert not answer.refused and any(o in answer.text.split("[")[0] for o in openings), question
    # asked why something remedies, the question wants the cause, not a list of remedies
    result = engine.search("Why does dropout reduce overfitting?", explain=True)
    assert result.explanation is not None
    assert not [item for item in result.explanation["expansions"] if item.get("attribute")]


def test_an_english_count_of_parts_is_searched_as_the_notes_count_them(engine: Engine) -> None:
    assert count_in_chinese("What are the two main parts of the Transformer?") == ("两个部分", "两部分")
    assert count_in_chinese("What are its three steps?")[0] == "三个步骤" and count_in_chinese("What is BERT?") == ()
    result = engine.search("Which two gates does a GRU have?", explain=True)
    assert result.explanation is not None
    counted = [item for item in result.explanation["expansions"] if item.get("count")]
    assert counted and "两个门" in counted[0]["added"]
    assert all(result.explanation["weighted_query"][t] < 1.0 for t in counted[0]["tokens"])


def test_english_phrase_reaches_a_chinese_only_term_in_the_notes(engine: Engine) -> None:
    # The notes call this term only "时间序列数据"; no English alias exists for the glossary to use.
    question = "Why are time series hard to model?"
    result = engine.search(question, explain=True)
    e = result.explanation
    assert e is not None
    bridged = [item for item in e["expansions"] if "bridged_to" in item]
    assert [item["matched"] for item in bridged] == ["time series"]
    assert "时间序列数据" in bridged[0]["added"] and bridged[0]["tokens"]
    assert e["translated_query"].startswith(question) and "时间序列数据" in e["translated_query"]
    assert all(e["weighted_query"][t] < 1.0 for t in bridged[0]["tokens"])
    assert any("时间序列数据" in h.chunk.index_text for h in result.hits[:3])


def test_chinese_questions_and_the_switches_leave_the_query_alone(engine: Engine, base_settings: Settings) -> None:
    e = engine.search("时间序列数据有什么特点？", explain=True).explanation
    assert e is not None and e["translated_query"] is None
    assert not any("bridged_to" in item for item in e["expansions"])

    off = Engine(base_settings.model_copy(update={"cross_lingual": False}), embedder=engine.embedder)
    off.load()
    e = off.search("Why are time series hard to model?", explain=True).explanation
    assert e is not None and e["translated_query"] is None
    assert not any("bridged_to" in item for item in e["expansions"])

    e = engine.search("Why are time series hard to model?", explain=True, expansion=False).explanation
    assert e is not None and e["translated_query"] is None and e["expansions"] == []


def test_unrelated_english_questions_link_nothing(engine: Engine) -> None:
    for question in (
        "How do I get a coffee stain out of a wool sweater?",
        "What is the capital of Australia?",
        "Which houseplants survive in low light?",
    ):
        e = engine.search(question, explain=True).explanation
        assert e is not None
        assert not any("bridged_to" in item for item in e["expansions"]), (question, e["expansions"])


def test_an_english_question_is_judged_and_ranked_through_its_translation(engine: Engine) -> None:
    # one vector, the translation's ("… (时间序列, …)"), ranks the passages and gives the gate its dense evidence:
    # the names the notes use bring the question nearer its passage than its English words alone
    question = "Why are time series hard to model?"
    result = engine.search(question, explain=True)
    on, off = result.explanation, engine.search(question, explain=True, expansion=False).explanation
    assert on is not None and off is not None and on["translated_query"] and not off["translated_query"]
    assert result.query_vectors is not None and len(result.query_vectors) == 1
    assert on["gate"]["features"]["dense_top"] == on["dense"][0]["similarity"]
    assert on["gate"]["features"]["dense_top"] > off["gate"]["features"]["dense_top"]


def test_an_english_question_costs_one_model_call(engine: Engine) -> None:
    # the question (with the names the glossary gave it) rides in its phrases' model call, and the names a
    # phrase links to are blended in from their stored vectors: no second call, about the translation's vector
    embedder = engine.embedder
    calls: list[list[str]] = []
    real = embedder.embed_queries

    def counted(texts):
        calls.append(list(texts))
        return real(texts)

    embedder.embed_queries = counted
    try:
        for question, translated, linked in (
            ("How do I get a coffee stain out of a wool sweater?", False, False),
            ("What is catastrophic forgetting when fine-tuning an LLM?", True, False),  # glossary names only
            ("Why are time series hard to model?", True, True),
        ):
            calls.clear()
            result = engine.search(question, explain=True)
            e = result.explanation
            assert e is not None
            assert bool(e["translated_query"]) == translated
            assert any("bridged_to" in item for item in e["expansions"]) == linked
            assert len(calls) == 1, (question, calls)
            expected = real([e["translated_query"] or question])[0]
            assert result.query_vectors is not None
            assert float(result.query_vectors[0] @ expected) > (0.98 if linked else 0.9999)
    finally:
        embedder.embed_queries = real


# ----------------------------------------------------------------- a small knowledge base of personal notes

SMALL_NOTES = {
    "咖啡.md": "# 手冲咖啡笔记\n\n## 水温\n手冲咖啡的水温一般在 88 到 94 摄氏度之间。浅烘焙的豆子适合用较高的水温。\n\n"
    "## 研磨度\n研磨度太细会导致萃取过度，口感苦涩；研磨度太粗则萃取不足。\n",
    "原子习惯.md": "# 《原子习惯》读书笔记\n\n## 两分钟法则\n两分钟法则是指：当你开始一个新习惯时，它应该花不到两分钟的时间。\n\n"
    "## 习惯养成的四个步骤\n习惯的形成分为四步：提示、渴求、反应和奖励。\n",
}


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory, base_settings: Settings, embedder, corpus_index) -> Engine:
    from ingest.pipeline import run_ingest

    root = tmp_path_factory.mktemp("small-kb")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in SMALL_NOTES.items():
        (corpus / name).write_text(text, encoding="utf-8")
    (root / "data").mkdir()
    os.symlink(base_settings.models_dir.resolve(), root / "data" / "models")
    settings = Settings(_env_file=None, data_dir=root / "data", corpus_dir=corpus)
    run_ingest(settings, embedder=embedder)
    engine = Engine(settings, embedder=embedder)
    engine.load()
    return engine


def test_a_small_knowledge_base_bridges_english_without_a_glossary(small_engine: Engine) -> None:
    # a few personal notes have no glossary of English names to measure how close a term sits to everything:
    # everyday English words stand in, so a phrase links to the heading it names and an unrelated word links
    # to nothing (measured against nothing, every phrase "linked" to some heading, and every term of so few
    # passages counted as too common to be a target)
    for question, heading in (
        ("What is the two-minute rule?", "两分钟法则"),
        ("How hot should the water be for pour-over coffee?", "水温"),
    ):
        answer = small_engine.ask(question)
        assert not answer.refused, question
        assert heading in answer.citations[0].heading_path[-1]
    for question in ("What is the capital of France?", "How do I fix a flat tire on my bicycle?"):
        e = small_engine.search(question, explain=True).explanation
        assert e is not None and not any("bridged_to" in item for item in e["expansions"]), question
        assert small_engine.ask(question).refused, question


def test_a_name_written_shortened_as_one_word_finds_its_group() -> None:
    aliases = AliasIndex([["层归一化", "Layer Normalization"], ["卷积神经网络", "Convolutional Network"], ["批量", "batch"]])
    tokenizer = Tokenizer()

    def expansions(query: str) -> list[tuple[str, list[str]]]:
        found = aliases.expand_explained(tokenizer.tokenize(query), tokenizer, query)[1]
        return [(item["matched"], item["added"]) for item in found]

    # the group comes in as the question spells it, so its full name counts as one of the name's forms
    assert expansions("What is LayerNorm?") == [("layernorm", ["层归一化", "Layer Normalization"])]
    assert expansions("ConvNet 是什么？") == [("convnet", ["卷积神经网络", "Convolutional Network"])]
    assert expansions("What is BatchNorm?") == []  # "batch" alone is no name of several words
    assert expansions("What is a layer?") == []  # a word of the name is not the name
    assert shortens("layernorm", ("layer", "normalization")) and not shortens("lnorm", ("layer", "normalization"))
    assert not shortens("layernormalization", ("layer", "normalization"))  # in full: the keys match it already
