"""Which candidate leads an answer: rules over the reader's ranking for what a sentence's score does not see.

A passage naming the question's Latin subject, or the Chinese subject word a section is titled by, answers
first; a sentence stating the count a list question names or the members it asks for, the shortcoming a
drawback question asks for, the ways of fixing the problem a question asks how to fix, or the figure the best's
passage does not give, one naming the subject where the best names only a sibling of it, one the notes go on
to name as the question does ("……n+m-1;这种方式称为full."), one writing the Chinese name of an English
question's phrase, or one naming every name an English question asks about together, comes first when rated
close to the best; a title or a line of names never leads; a follow-up does not open with what the last answer
already said. The verdict (answerable or not) is never changed here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rag.answer.citations import strip_markers
from rag.answer.sentence_form import (
    LEAD_IN,
    compound_sibling,
    count_asked,
    names_members,
    sibling_named,
    states_count,
    states_something,
)
from rag.answer_types import asks_meaning, asks_members, states, states_drawback, states_remedy
from rag.text import is_cjk, normalize

if TYPE_CHECKING:
    from rag.answer.reader import Candidate, Reading

NAMING_MARGIN = 1.0  # logit units: a passage naming the question's subject this close to the best answers first
# logit units: the best sentence states no drawback the question asks for; one that does this close leads (else
# `refusal_rules` refuses: an answer naming no shortcoming is not one)
DRAWBACK_MARGIN = 2.0
DRAWBACK_MARGIN_ACROSS = 3.5  # ... for an English question over Chinese notes, or one under a heading naming a drawback
CODE_MARGIN = 2.0  # logit units: prose this close to a best line of code answers a question that asks no how
# logit units: no sentence the answer would quote gives the figure the question insists on; one that does this
# close leads (else `refusal_rules` refuses)
FIGURE_LEAD_MARGIN = 2.0
REMEDY_MARGIN = 2.0  # logit units: the best sentence says no fix the question asks for; one that does this close leads
# logit units: a line announcing the very comparison asked ("GPT和BERT的区别：") leads from this close, whichever
# word of difference the question uses ("有什么不同？")
ANNOUNCED_COMPARISON_MARGIN = 2.0
MEANING_MARGIN = 1.0  # logit units: the best sentence defines nothing, where the question asks what a term means; one defining it this close leads
MEMBERS_MARGIN = 1.0  # logit units: the best sentence names no members the question asks for; one that does this close leads
# logit units: the best sentence is what the notes go on to name otherwise than the question ("这种卷积的方式称为
# valid" for "full 方式的卷积……"); one they name as the question does this close leads
NAMED_AFTER_MARGIN = 2.0
TOGETHER_MARGIN = 1.5  # logit units, English questions only: a sentence naming all the names asked together this close leads
SIBLING_MARGIN = 3.0  # logit units: the best sentence speaks of a sibling; one naming the subject this close leads
REPEAT_LOOKAHEAD = 5  # a follow-up's answer opens with the best of this many candidates the last answer did not quote
NEW_MARGIN = 3.0  # logit units: ...and only with one rated this close to the best


def _close_first(
    candidates: list[Candidate], wanted: Callable[[Candidate], bool], margin: float = NAMING_MARGIN
) -> list[Candidate]:
    """`candidates` (best first) with the best `wanted` one rated within `margin` of the best moved to the
    front; unchanged when there is none."""
    floor = candidates[0].score - margin
    found = next((c for c in candidates if c.score >= floor and wanted(c)), None)
    return candidates if found is None else [found, *(c for c in candidates if c is not found)]


def leading_first(
    candidates: list[Candidate],
    naming: Collection[int],
    asks_list: bool,
    count: int | None = None,
    subject: Collection[str] = (),
    question: str = "",
    is_word: Callable[[str], bool] = lambda word: False,
    asks_compare: bool = False,
    lead_in: Callable[[Candidate], str] = lambda candidate: "",
    asks_drawback: bool = False,
    takes_code: bool = True,
    translated: Collection[str] = (),
    remedy_of: str = "",
    named_after: Callable[[Candidate], str] = lambda candidate: "",
    names_together: Sequence[Sequence[str]] = (),
) -> list[Candidate]:
    """The ranked candidates with what may lead an answer first (`candidates` sorted best first); `count`: the
    number of parts the question names, if any; `subject`: the question's subject words (normalized), asked in
    `question`; `is_word`: whether the notes index a string as a word; `lead_in`: the line a candidate's list
    hangs from (`list_lead_in`); `asks_drawback`: the question names a drawback ("缺点", "limitations");
    `takes_code`: the question asks how, or for a formula, which a line of code may answer; `translated`: the
    Chinese names an English question's words were searched by ("overfitting": 过拟合), whose siblings count too;
    `remedy_of`: the problem the question asks how to fix ("过拟合"), if it asks that; `named_after`: the name the
    sentence after a candidate gives what it describes (`name_given_after`); `names_together`: the names an
    English question asks about together, each with the forms it may be written in (`names_asked_together`)."""
    if not candidates:
        return candidates
    if asks_list and count and not states_count(candidates[0].sentence.text, count):
        # "哪三个步骤？": a sentence close to the best that states three steps introduces the answer
        candidates = _close_first(candidates, lambda c: states_count(c.sentence.text, count))
    if asks_members(question) and not names_members(candidates[0].sentence.text):
        # "深度神经网络（DNN）这一大类具体包括哪些网络？": the definition of a DNN names none; a sentence close to it that
        # names them ("包括多层感知机（MLPs）、卷积神经网络（CNNs）、……"), from a window as much about the subject, leads
        about = candidates[0].features.get("subject_window", 0.0)
        candidates = _close_first(
            candidates,
            lambda c: names_members(c.sentence.text) and c.features.get("subject_window", 0.0) >= about,
            margin=MEMBERS_MARGIN,
        )
    if asks_meaning(question) and not candidates[0].features.get("type_definition"):
        # "多头注意力里的“多头”指什么？": "利用多头机制，……" uses the word; "“多头”实际上是指……" says what it means
        candidates = _close_first(
            candidates,
            lambda c: c.features.get("type_definition", 0.0) > 0 and c.features.get("subject_defined", 0.0) > 0,
            margin=MEANING_MARGIN,
        )
    if asks_drawback and not states_drawback(candidates[0].sentence.text):
        # "DALL·E 2 的不足": a sentence close to the best that states a shortcoming answers before one that does
        # not, from a section as much about the subject (full fine-tuning's cost is not LoRA's drawback)
        about = candidates[0].features.get("subject_heading", 0.0)

        def flaw(c: Candidate) -> bool:
            return states_drawback(c.sentence.text) and c.features.get("subject_heading", 0.0) >= about

        candidates = _close_first(candidates, flaw, margin=DRAWBACK_MARGIN)
        if not states_drawback(candidates[0].sentence.text):
            # a section the notes title by the shortcoming itself ("DALL·E 2 > 不足") says it from further below
            candidates = _close_first(
                candidates, lambda c: flaw(c) and states_drawback(c.sentence.heading), margin=DRAWBACK_MARGIN_ACROSS
            )
        if translated and not states_drawback(candidates[0].sentence.text):
            # the English ranker reads few features and rates its candidates closer together: further below, one
            # that writes a Chinese name the question was searched by ("非均匀量化……的缺点是不利于硬件加速")
            candidates = _close_first(
                candidates,
                lambda c: flaw(c) and any(t in normalize(c.sentence.text) for t in translated),
                margin=DRAWBACK_MARGIN_ACROSS,
            )
    pair = _joined_pair(question, subject)
    if pair and not all(t in normalize(candidates[0].sentence.text) for t in pair):
        # "QLoRA 和 LoRA 是什么关系？": a sentence close to the best that names both says how they relate
        candidates = _close_first(candidates, lambda c: all(t in normalize(c.sentence.text) for t in pair))
    if asks_compare and len(subject) >= 2:
        # "BERT 和 GPT 有什么区别？": a line that announces that very comparison ("GPT和BERT的区别：") leads its items
        candidates = _close_first(
            candidates, lambda c: _announces_comparison(c.sentence.text, subject), margin=ANNOUNCED_COMPARISON_MARGIN
        )
    # a sibling the question names itself ("硬标签和软标签有什么不同？") is no other entity
    # the line a list item hangs from says whose list it is ("导致欠拟合的原因：" above "2、特征项不够……")
    said = normalize(f"{lead_in(candidates[0])} {candidates[0].sentence.text}")
    named = {t: sibling_named(said, t, is_word) for t in [*subject, *translated]}
    siblings = [t for t, word in named.items() if word and word not in question]
    if siblings:
        # "欠拟合的解决方法：" for "过拟合怎么解决？": a sentence close to it that names the subject itself (or whose
        # list's line does: "过拟合的解决方法：" above "1、获取更多的训练数据") comes first
        candidates = _close_first(
            candidates,
            lambda c: all(t in normalize(f"{lead_in(c)} {c.sentence.text}") for t in siblings)
            and states_something(c.sentence.text, c.features),
            margin=SIBLING_MARGIN,
        )
    if remedy_of:
        # "模型过拟合了怎么解决？": "……即模型开始过拟合" says what it is, "bagging 能有效防止过拟合" one way; a line close
        # to the best that lists the ways of fixing the subject itself answers ("防止神经网络过拟合的常用方法包括:"), or
        # else one that says a way, from a window as much about the subject as the best's
        about = candidates[0].features.get("subject_window", 0.0)

        def fixes(c: Candidate) -> bool:
            with_lead_in = normalize(f"{lead_in(c)} {c.sentence.text}")
            return (
                states_remedy(c.sentence.text)
                and remedy_of in with_lead_in
                and c.features.get("subject_window", 0.0) >= about
            )

        def lists_fixes(c: Candidate) -> bool:  # "解决办法：充足有效的训练数据、降低模型复杂度、……": the ways, together
            return fixes(c) and (LEAD_IN.search(c.sentence.text) is not None or c.features.get("enumeration", 0.0) > 0)

        if not lists_fixes(candidates[0]):
            listed = _close_first(candidates, lists_fixes, margin=REMEDY_MARGIN)
            if listed is candidates and not states_remedy(candidates[0].sentence.text):
                listed = _close_first(
                    candidates, lambda c: fixes(c) and states_something(c.sentence.text, c.features), margin=REMEDY_MARGIN
                )
            candidates = listed
    given = named_after(candidates[0])
    if given and given not in question:
        # "……则结果长度为n-m+1;这种卷积的方式称为 valid" for "full 方式的卷积……输出长度是多少？": the sentence the notes
        # name full ("……则结果长度为 n+m-1;这种方式称为full.") comes first when close
        candidates = _close_first(
            candidates, lambda c: (name := named_after(c)) != "" and name in question, margin=NAMED_AFTER_MARGIN
        )
    compound = compound_sibling(question, said, is_word, subject)
    if compound is not None and compound[1] not in normalize(candidates[0].sentence.heading):
        # "状态价值函数：定义为……" for "动作价值函数是怎么定义的？": one close to it that names 动作价值函数 comes first;
        # under a heading that names the question's own compound the sentence is about it ("……向山谷下降……" of
        # the 梯度下降法 section names no sibling of 梯度下降)
        candidates = _close_first(
            candidates,
            lambda c: compound[1] in normalize(c.sentence.text) and states_something(c.sentence.text, c.features),
            margin=SIBLING_MARGIN,
        )
    named_best = max((c.score for c in candidates if c.passage in naming), default=None)
    if named_best is not None and candidates[0].passage not in naming and named_best >= candidates[0].score - NAMING_MARGIN:
        # the best sentence comes from a passage that never names what the question is about ("DDPG"), and one
        # that does is rated close: the passages that name it answer first. Far below, the name is context
        # ("NumPy" of "What is broadcasting in NumPy?") and the best passage answers.
        candidates = sorted(candidates, key=lambda c: c.passage not in naming)
    if not takes_code and candidates[0].sentence.kind == "code":
        # "What is pooling?" is not answered by "x_max = layers.GlobalMaxPooling2D()(inputs)": code shows how
        candidates = _close_first(candidates, lambda c: c.sentence.kind != "code", margin=CODE_MARGIN)
    if not asks_list and not states_something(candidates[0].sentence.text, candidates[0].features):
        # a title or a line of names ("Temperature Sampling") answers no question but a list's: the best
        # sentence that states something comes first
        stating = next((c for c in candidates if states_something(c.sentence.text, c.features)), None)
        if stating is not None:
            candidates = [stating, *(c for c in candidates if c is not stating)]
    if len(names_together) >= 2:
        # "Why can a Transformer avoid the vanishing-gradient problem that RNNs run into?": a sentence that names
        # them all says how they relate ("Transformer……不需要像循环神经网络（RNN）那样……"), not one on the problem alone
        def names_all(c: Candidate) -> bool:
            said = normalize(c.sentence.text)
            return all(any(form in said for form in forms) for forms in names_together)

        if not names_all(candidates[0]):
            candidates = _close_first(
                candidates, lambda c: names_all(c) and states_something(c.sentence.text, c.features), margin=TOGETHER_MARGIN
            )
    return candidates


def naming_topic(subject: Mapping[str, float], texts: Sequence[str], headings: Sequence[str]) -> set[int]:
    """The passages that write the question's rarest Chinese subject word a read passage is titled by ("思维链" of
    "思维链提示为什么能提高推理能力？", a section of the notes), for `leading_first` to answer from first when close:
    not a passage on prompting in general that never names it. A subject word no heading names (缓解 of "梯度爆炸
    怎么缓解？") may be any passage's. `texts`, `headings`: each passage's normalized sentences and heading path."""
    words = sorted((t for t in subject if len(t) >= 2 and all(is_cjk(ch) for ch in t)), key=lambda t: -subject[t])
    topic = next((t for t in words if any(t in h for h in headings)), None)
    if topic is None:
        return set()
    return {i for i, text in enumerate(texts) if topic in text or (i < len(headings) and topic in headings[i])}


def figure_first(candidates: list[Candidate]) -> list[Candidate]:
    """`candidates` with the best one that states a figure first, when rated within FIGURE_LEAD_MARGIN of the best
    and from a section as much about the subject: "学习率设多大合适？" opens with "……例如 0.01" of the section on
    setting it, not the definition. For a question the best's passage gives no figure for (`lacks_figure`)."""
    if not candidates:
        return candidates
    about = candidates[0].features.get("subject_heading", 0.0)
    return _close_first(
        candidates,
        lambda c: states(c.sentence.text, "number") and c.features.get("subject_heading", 0.0) >= about,
        margin=FIGURE_LEAD_MARGIN,
    )


def _joined_pair(question: str, subject: Collection[str]) -> tuple[str, str] | None:
    """Two subject words the question joins with 和 / 与 / 跟 / and ("QLoRA 和 LoRA 是什么关系？"), or None."""
    for a in subject:
        for b in subject:
            if (
                a != b
                and a in question
                and b in question
                and re.search(rf"{re.escape(a)}\s*(?:和|与|跟|同|及|and)\s*{re.escape(b)}", question)
            ):
                return a, b
    return None


_COMPARISON = re.compile(r"区别|不同|差异|异同|对比|比较|differences?|compar", re.I)


def _announces_comparison(text: str, subject: Collection[str]) -> bool:
    """A lead-in that names every subject of the question and a comparison ("GPT和BERT的区别：")."""
    norm = normalize(text)
    return norm.rstrip().endswith((":", "：")) and bool(_COMPARISON.search(norm)) and all(t in norm for t in subject)


# "in reinforcement learning", "In a deep learning framework,": the field a question is asked in, not its subject
_IN_FIELD = re.compile(r"\b(?:in|within|for)\s+(?:a |an |the )?$")


def subject_phrase_names(question: str, phrase_forms: Mapping[str, Sequence[str]]) -> list[str]:
    """The Chinese names of an English question's phrases, but those of the field it is asked in."""
    text = normalize(question)
    names: list[str] = []
    for phrase, forms in phrase_forms.items():
        at = text.find(phrase)
        if at >= 0 and not _IN_FIELD.search(text[:at]):
            names += [f for f in forms if len(f) >= 3]
    return names


def translation_first(candidates: list[Candidate], names: Sequence[str]) -> list[Candidate]:
    """An English question's candidates with one that writes the Chinese name of a phrase it asks about first,
    when the best does not and that one is rated within NAMING_MARGIN: "折扣率: 又叫折扣因子……" for "What does
    the discount factor mean…?", not "折扣回报 Discounted Return……", which only shares the English word."""
    if not candidates or not names or any(n in normalize(candidates[0].sentence.text) for n in names):
        return candidates
    return _close_first(
        candidates,
        # not a title naming it ("3. 图神经网络（GNNs）")
        lambda c: any(n in normalize(c.sentence.text) for n in names) and states_something(c.sentence.text, c.features),
    )


# "还有哪些区别？", "What else…": more than the last answer said
_ASKS_MORE = re.compile(r"还有|另外|其他|其它|别的|\b(?:else|other|more)\b", re.I)


def new_first(reading: Reading, said: str, asked: str = "", lookahead: int = REPEAT_LOOKAHEAD) -> Reading:
    """A follow-up's reading with the best sentence the previous answer did not already quote first (among the
    top `lookahead`): "第二步具体做什么？" asks for more than the step's line the last answer listed, and "那坏处呢？"
    should not open with the sentence "有什么好处？" got. A list asked for again, not for more of it (`asked`: the
    follow-up as the user wrote it), is still the list the last answer led into. The verdict is unchanged."""
    said_text = normalize(strip_markers(said))
    if not reading.candidates or not said_text:
        return reading

    def repeated(c: Candidate) -> bool:
        text = normalize(c.sentence.text)
        return len(text) >= 8 and text in said_text

    count = count_asked(reading.profile.text)
    best = reading.candidates[0].sentence.text
    if (
        not repeated(reading.candidates[0])
        or (count and states_count(best, count))
        or ("list" in reading.profile.types and LEAD_IN.search(best) and not _ASKS_MORE.search(asked))
    ):
        # asked again for the three steps the last answer listed ("What are its steps?" after an answer that
        # went "……按三个步骤分解：1. …"): they are still the answer
        return reading
    # far below the best, a sentence is new but no answer ("BPE 解决了什么问题？" after "什么是 BPE？": the last
    # answer quoted the BPE passage whole; an ALBERT sentence of another passage came next, 5 logits down)
    floor = reading.candidates[0].score - NEW_MARGIN
    new = next((c for c in reading.candidates[:lookahead] if not repeated(c) and c.score >= floor), None)
    if new is None:
        return reading
    return replace(reading, candidates=[new, *(c for c in reading.candidates if c is not new)])
