"""Ordinal follow-ups: "第二步具体做什么？" / "What about the second step?" point into the previous answer's numbered
list, and the item itself takes the ordinal's place. Also `join_words`, which the follow-up resolver joins its
pieces with."""

from __future__ import annotations

import re

from rag.answer.citations import strip_markers
from rag.text import is_cjk, normalize

# An ordinal that opens a question and points into the previous answer's list: "第二步具体做什么？", "第三点呢？".
_ZH_ORDINAL = re.compile(
    r"^\s*(?:详细|具体|展开|再)?(?:说说|讲讲|解释一下|介绍一下|说一下|讲一下)?\s*"
    r"第[一二三四五六七八九十\d]{1,2}(?:步|个|点|种|类|阶段|部分|条|层)"
)
_EN_ORDINAL = re.compile(
    r"\bthe\s+(?:first|second|third|fourth|fifth|last|next|final)\s+(?:step|stage|phase|part|point|one)\b", re.I
)
_ORDINAL_ITEM = re.compile(r"第(?P<n>[一二两三四五六七八九十\d]{1,2})(?:步|个|点|种|类|阶段|部分|条|层)")
_ORDINAL_VALUES = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10,
                   "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}
# A numbered line of an answer ("2. 聚合问答数据并训练一个奖励模型；[1]", its markers stripped).
_NUMBERED_LINE = re.compile(r"^\s*(?:[-*+•]\s*)?(?:(?P<n>\d{1,2})\s*[.、．)）]|[（(](?P<p>\d{1,2})[)）])\s*(?P<item>\S.*)$")
MAX_ITEM_CHARS = 60
# A list written inline after what divides it ("主要分为两个流派，基于参数共享和基于标注策略两类。", "包括：A、B、C"):
# its items run to the end of the clause, joined by 、 / 和 / 与 / 及, the count of kinds after the last dropped.
_INLINE_LIST = re.compile(
    r"(?:分为|分成|包括|包含|有)(?:[^。；;：:，,]{0,12}[：:，,]|[两二三四五六七八九十\d]{1,2}\s*(?:个|类|种))\s*(?P<items>[^。；;：:]+)"
)
_ITEM_JOIN = re.compile(r"\s*(?:、|，|,|以及|和|与|及)\s*")
_KINDS_AFTER = re.compile(r"\s*(?:这)?[两二三四五六七八九十\d]{1,2}\s*(?:个|类|种|部分|大类|方面)\S{0,4}$")


def asks_for_item(text: str) -> bool:
    """Whether a question asks about one item of a list by its ordinal ("第二步……", "the second step")."""
    return bool(_ZH_ORDINAL.match(text) or _EN_ORDINAL.search(text))


def answer_item(answer: str, n: int) -> str | None:
    """Item n of the numbered list in an answer, without its number, markers and closing punctuation; else of
    the first list it writes inline ("分为两类：A 和 B")."""
    for line in answer.splitlines():
        match = _NUMBERED_LINE.match(strip_markers(line))
        if match and int(match.group("n") or match.group("p")) == n:
            item = match.group("item").strip().rstrip("；;。.，,：:").strip()
            return item[:MAX_ITEM_CHARS] if item else None
    inline = _INLINE_LIST.search(strip_markers(answer))
    if inline is None:
        return None
    items = [i for i in _ITEM_JOIN.split(_KINDS_AFTER.sub("", inline.group("items").strip())) if i]
    return items[n - 1][:MAX_ITEM_CHARS] if len(items) >= max(2, n) else None


def resolve_ordinal(text: str, subject: str, answer: str) -> str | None:
    """"第二步具体做什么？" after an answer listing the steps: the step itself takes the ordinal's place; None when
    the answer lists no such item."""
    match = _ORDINAL_ITEM.search(text) or _EN_ORDINAL.search(text)
    if match is None or not answer:
        return None
    word = match.group("n") if match.re is _ORDINAL_ITEM else match.group(0).split()[1].lower()
    n = int(word) if word.isdigit() else _ORDINAL_VALUES.get(word)
    item = answer_item(answer, n) if n else None
    if item is None:
        return None
    phrase = item if normalize(subject) in normalize(item) else join_words(subject, item)
    return join_words(text[: match.start()], phrase, text[match.end() :])


def _word_char(char: str) -> bool:
    return char.isalnum() or is_cjk(char)


def join_words(*parts: str) -> str:
    """The parts concatenated, with a space where a Latin word would otherwise touch a neighbouring word."""
    out = ""
    for part in parts:
        if out and part and _word_char(out[-1]) and _word_char(part[0]) and (out[-1].isascii() or part[0].isascii()):
            out += " "
        out += part
    return out
