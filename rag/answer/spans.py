"""Answer spans: the reader's best sentence plus what it needs around it, as sentences of one passage.

A lead-in ("X 分为三类：") takes the items it introduces; a sentence that leans on the previous one ("这种方法……")
takes it, placed after the run the best sentence opens (the first sentence is what a reader sees first); a
formula or code block that follows its sentence stays whole; a list asked for is quoted from its first item.
A second passage joins only with a distinct answering sentence (comparisons, a second subject). Pure functions
over `Sentence`s: every sentence of a span is one of its passage's own, so its text is an exact slice of the
chunk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher

from rag.answer.reader import Candidate, Reading
from rag.answer.reader_features import coverage
from rag.answer.sentence_form import (
    ITEM_NUMBER,
    LEAD_IN,
    LEANS_BACK,
    NAMES_BACK,
    count_asked,
    reads_as_sentence,
    states_something,
)
from rag.answer.sentences import Sentence
from rag.answer_types import is_instruction, must_state, states
from rag.text import is_cjk, normalize

# A sentence opening with a connective continues the one before it.
# ... or refers back in its first clause ("在 GPT 中，这种机制……"); 此外, 其实, 其中 and the like are not references.
REFERS_BACK = re.compile(
    r"^(?:[^，,。；;：:]{0,12}[，,]\s*)?(?:这|该|此(?!外)|上述|其(?![实次他余中])|它|(?:this|these|those|such)\b)", re.I
)
CONTINUES = re.compile(r"^(?:即|因此|所以|也就是|例如|比如|其中|(?:so|thus|therefore|i\.e\.|e\.g\.)\b)", re.I)
# A sentence that opens without a subject of its own ("可以使用更复杂的模型；", "所以训练样本要尽可能的全面"): a later
# sentence of a list item that opens so is quoted from the item's beginning
_STANDS_ON_ITEM = re.compile(r"^(?:可以|能|如果|若|需要|应该|应|要|就|也|还|并且|但|而且?|且|所以|因此|即|例如|比如)")
# Two things joined and asked the same of each ("A 和 B 分别……", "A 与 B 各自……")
_ASKS_EACH = re.compile(r"[和与跟及].+(?:分别|各自|各是|各有|各为)|\b(?:each|respectively)\b", re.I)
MAX_LIST_ITEMS = 8
MAX_CUT_PIECES = 2  # a sentence cut by line breaks takes at most this many pieces on each side of the best one
MAX_ITEM_SENTENCES = 4  # a list item quoted alone keeps at most this many of its sentences
SECOND_PASSAGE_MARGIN = 1.0  # a second passage's sentence must score within this of the best (logit units)
SECOND_PASSAGE_GAIN = 0.25  # ... and cover this share of the question's words that the first span does not
QUOTABLE = frozenset({"text", "code", "short"})
COMPARED_SECTION_MARGIN = 4.0  # ... or, for the other thing compared, a sentence of its own section within this
SUPPORT_SENTENCES = 4  # an answer quotes at most this many sentences besides a list's items
SUPPORT_MARGIN = 2.5  # ... each scoring within this of the best sentence (logit units)
REPEATED_SHARE = 0.8  # ... and none of which has this share of its characters in a sentence already quoted
REPEATED_OPENING = 10  # ... whose first characters it writes


def span_for(best: Sentence, group: Sequence[Sentence], *, asks_list: bool, takes_code: bool = True) -> list[Sentence]:
    """The sentences of one passage that answer, around `best` (sentences of `group`): the run `best` opens
    (or the list it is an item of, from its first item), then the sentence it leans on, if any (before it, when
    `best` only names what that one describes: "……此时预测结果就会存在较大的偏差。" then "这种现象称为概念漂移").
    A code block or formula after `best` comes with it when `takes_code` (the question asks how, or for a
    formula)."""
    i = best.pos
    start, end = i, i + 1  # [start, end) into group
    leaned_on: list[Sentence] = []

    def quotable(s: Sentence) -> bool:
        return s.kind in QUOTABLE and not is_instruction(s.text)

    item = _item_start(group, i) if _STANDS_ON_ITEM.match(best.text) else None
    if item is not None and quotable(group[item]):
        start = item  # a later sentence of a list item that cannot stand alone ("可以使用更复杂的模型；"), with its item
    if asks_list and best.bullet:  # quote a list from its first item
        while start > 0 and group[start - 1].bullet and quotable(group[start - 1]):
            start -= 1
    elif LEANS_BACK.match(best.text) and i > 0 and quotable(group[i - 1]) and not LEAD_IN.search(group[i - 1].text):
        leaned_on = [group[i - 1]]
    if LEAD_IN.search(best.text) or (asks_list and best.bullet):
        # the items it introduces (or the rest of the list), one line each
        taken = 0
        while end < len(group) and taken < MAX_LIST_ITEMS and quotable(group[end]):
            nxt = group[end]
            if not (nxt.line_start or nxt.bullet or nxt.kind == "code"):
                end += 1  # a later sentence of the same item stays with it
                continue
            if asks_list and best.bullet and not nxt.bullet:
                break
            if taken and LEAD_IN.search(nxt.text) and not nxt.bullet:
                break  # a new lead-in after the items: its own items would not come with it
            end += 1
            taken += 1
            if LEAD_IN.search(nxt.text) and not nxt.bullet:
                break
    else:
        while takes_code and end < len(group) and group[end].kind == "code":  # a formula or code block stays whole
            end += 1
        while best.kind == "code" and start > 0 and group[start - 1].kind == "code":  # from its first line
            start -= 1
        if best.bullet:  # a list item stays whole: its later sentences, up to the next line
            while end < len(group) and end - i < MAX_ITEM_SENTENCES and quotable(group[end]):
                if group[end].line_start or group[end].bullet or LEAD_IN.search(group[end].text):
                    break  # the next line, or a lead-in whose items would not come with it
                end += 1
        # a sentence a line break cut mid-clause is quoted whole, from its beginning to its end
        while start > 0 and group[start].continues and i - start < MAX_CUT_PIECES and quotable(group[start - 1]):
            start -= 1
        while end < len(group) and group[end].continues and end - i <= MAX_CUT_PIECES and quotable(group[end]):
            end += 1
        if end == i + 1 and end < len(group) and quotable(group[end]) and _goes_on(group[i], group[end]):
            end += 1
    # a sentence the best leans on may already open the run: the line break that cut it made the best a piece
    run = [s for s in group[start:end] if quotable(s) or s is best]
    leaned_on = [s for s in leaned_on if s.pos < start]
    # "这种现象称为概念漂移。" only names what the sentence before it describes: that one is read first
    return leaned_on + run if NAMES_BACK.match(best.text.strip()) else run + leaned_on


def _item_start(group: Sequence[Sentence], i: int) -> int | None:
    """The position of the list item's first sentence when sentence i is a later sentence of that item, on its
    line; None otherwise."""
    j = i
    while j > 0 and not group[j].line_start and i - j < MAX_ITEM_SENTENCES:
        j -= 1
    return j if j < i and group[j].bullet and group[j].line_start and group[j].kind == "text" else None


def _goes_on(s: Sentence, nxt: Sentence) -> bool:
    """Whether `nxt` continues `s`: it opens with a connective ("因此……"), or it is the next clause of the same line
    after a semicolon and stands on `s`'s subject ("GRU是LSTM结构的变式；它将忘记门和输入门合并……")."""
    if CONTINUES.match(nxt.text):
        return True
    return s.text.endswith(("；", ";")) and not (nxt.line_start or nxt.gap_newline) and LEANS_BACK.match(nxt.text) is not None


def _between_is_clean(group: Sequence[Sentence], a: int, b: int) -> bool:
    """No sentence strictly between positions a and b addresses the assistant (a citation spans them all)."""
    lo, hi = min(a, b), max(a, b)
    return not any(is_instruction(s.text) for s in group[lo + 1 : hi])


def _other_section(group: Sequence[Sentence], s: Sentence, best: Sentence) -> bool:
    """Whether `s`, a sentence of prose (no list item), stands under another heading of the passage than `best`:
    the text under "1. 深度神经网络" says nothing of "3. 图神经网络", the item of an outline `best` is under."""
    return not s.bullet and _heading_above(group, s.pos) != _heading_above(group, best.pos)


def _heading_above(group: Sequence[Sentence], pos: int) -> int:
    return next((i for i in range(pos, -1, -1) if group[i].kind == "heading"), -1)


def compose(reading: Reading, n_passages: int, *, max_chars: int) -> tuple[list[Sentence], str | None]:
    """The sentences of the extractive answer and a note for an asked type the notes do not give.

    The best span comes first, opening with the best sentence (what a reader sees first), then other highly
    rated sentences of its passage in reading order, then a second passage's span where the question has a
    second part. Only candidates of the first `n_passages` passages are quoted; sentences that address the
    assistant never are.
    """
    pool = [c for c in reading.candidates if c.passage < n_passages and not c.features.get("instruction")]
    if not pool:
        return [], None
    profile = reading.profile
    missing = list(must_state(profile.text, profile.types))
    # no sentence read gives the figure or formula asked for: what the notes say of the subject itself comes
    # first, not a sentence that only shares the asked word ("按照公式计算……" of another method)
    absent = bool(missing) and not any(c.features.get(f"type_{t}") for c in pool[:5] for t in missing)
    best = (_about_subject(pool[:5]) if absent else None) or pool[0]
    group = reading.sentences[best.passage]
    count = count_asked(profile.text) if "list" in profile.types else None
    outline = _outline(group, count, max_chars) if count and _outline_is_about(best, group, profile.subject) else []
    if outline:  # "大模型训练的三个阶段是什么？" over "1. 预训练（Pretraining）…2. 微调…3. …": the stages, each with its line
        return outline, None
    asks_list = "list" in profile.types and _list_is_about(best, group, profile.subject)
    # code after the best sentence shows how, or gives the formula; "有什么好处？" is not answered by "import paddle"
    takes_code = bool(profile.types & {"formula", "how"})
    span = _trim(span_for(best.sentence, group, asks_list=asks_list, takes_code=takes_code), best, max_chars)
    support = sorted(_support(pool, best, span, group, max_chars=max_chars), key=lambda s: s.pos)
    chosen = span + support
    second = _second(pool, best, chosen, reading)
    if second is not None:
        quoted = set(map(id, chosen))  # a span of the best passage may run into what the first one quoted
        extra = [s for s in span_for(second.sentence, reading.sentences[second.passage], asks_list=False) if id(s) not in quoted]
        chosen += _trim(extra, second, max_chars - sum(len(s.text) + 4 for s in chosen))
    stated = any(states(s.text, kind) for s in chosen for kind in missing)
    # the passage is relevant but states no formula / number: say so rather than stitch fragments
    return chosen, (missing[0] if absent and not stated else None)


def _outline(group: Sequence[Sentence], count: int, max_chars: int) -> list[Sentence]:
    """The passage's numbered items 1..`count`, each with the sentence under it, when the passage numbers exactly
    as many as the question counts (a note's outline of stages: titles a reader never sees as answers alone);
    [] otherwise, or when they do not fit in `max_chars`."""
    numbered = [(s, ITEM_NUMBER.match(s.text)) for s in group if s.bullet]
    items = [s for s, number in numbered if number]
    if count < 2 or [int(number.group(1)) for _, number in numbered if number] != list(range(1, count + 1)):
        return []
    out: list[Sentence] = []
    for item in items:
        out.append(item)
        after = group[item.pos + 1] if item.pos + 1 < len(group) else None
        if after is not None and after.kind == "text" and not after.bullet:
            out.append(after)
    return out if sum(len(s.text) + 4 for s in out) <= max_chars else []


def _outline_is_about(best: Candidate, group: Sequence[Sentence], subject: Mapping[str, float]) -> bool:
    """Whether the best passage's numbered items are the subject's: it heads the section, or the text above
    the first item names it ("RLHF……这里我们按三个步骤分解：")."""
    if not subject or best.features.get("subject_heading", 0.0) > 0:
        return True
    above = []
    for s in group:
        if s.bullet and ITEM_NUMBER.match(s.text):
            break
        above.append(s.text)
    return any(term in normalize(" ".join(above)) for term in subject)


def _about_subject(candidates: Sequence[Candidate]) -> Candidate | None:
    """The best candidate that opens with or defines the question's subject and says something of it."""
    for c in candidates:
        about = max(c.features.get("subject_opening", 0.0), c.features.get("subject_defined", 0.0)) >= 0.5
        if about and reads_as_sentence(c.sentence.text) and states_something(c.sentence.text, c.features):
            return c
    return None


def _list_is_about(best: Candidate, group: Sequence[Sentence], subject: Mapping[str, float]) -> bool:
    """Whether the list `best` is an item of is about the question's subject: the subject is in its section's
    heading or its lead-in line. An item that alone names it ("优化器 - 包含……如 Adam……" in a list of a framework's
    parts) does not make the whole list the answer."""
    if not subject or best.features.get("subject_heading", 0.0) > 0:
        return True
    i = best.sentence.pos - 1
    while i >= 0 and group[i].bullet:
        i -= 1
    lead_in = normalize(group[i].text) if i >= 0 and LEAD_IN.search(group[i].text) else ""
    return any(term in lead_in for term in subject)


def _trim(span: list[Sentence], best: Candidate, budget: int) -> list[Sentence]:
    """Keep the span within `budget` characters, always keeping the best sentence."""
    out: list[Sentence] = []
    used = 0
    for s in span:
        cost = len(s.text) + 4
        if s is best.sentence or used + cost <= budget:
            out.append(s)
            used += cost
        elif s.pos > best.sentence.pos:
            break
    return out


def _support(
    pool: Sequence[Candidate], best: Candidate, chosen: Sequence[Sentence], group: Sequence[Sentence], *, max_chars: int
) -> list[Sentence]:
    """Other sentences of the best passage the reader also rates highly: they complete the answer."""
    used = sum(len(s.text) + 4 for s in chosen)
    taken = set(map(id, chosen))
    out: list[Sentence] = []
    brought = 0  # sentences quoted only for what a supporting sentence refers to: they do not count
    # a formula in letters ("TPR=TP/(TP+FN)") says nothing in words of what it computes: the passage's sentences
    # that do are taken from further below it
    margin = SUPPORT_MARGIN * (2 if not is_cjk(best.sentence.text) else 1)
    for c in pool[1:]:
        if len(chosen) + len(out) - brought >= SUPPORT_SENTENCES or c.score < best.score - margin:
            break
        s = c.sentence
        if c.passage != best.passage or id(s) in taken or s.kind != "text" or LEAD_IN.search(s.text):
            continue
        if c.features.get("title_like") or used + len(s.text) + 4 > max_chars:
            continue
        if not _between_is_clean(group, s.pos, best.sentence.pos) or _other_section(group, s, best.sentence):
            continue
        # the notes say it twice: quote it once (pieces a line break cut read as one text)
        if repeats(s.text, "".join(q.text for q in [*chosen, *out])):
            continue
        cost = len(s.text) + 4
        previous = group[s.pos - 1] if s.pos > 0 else None
        if REFERS_BACK.match(s.text) and (previous is None or id(previous) not in taken):
            # "这种现象使得……" read alone refers to nothing: quote what it refers to first, or leave it out
            if previous is None or previous.kind != "text" or LEAD_IN.search(previous.text) or is_instruction(previous.text):
                continue
            if used + cost + len(previous.text) + 4 > max_chars:
                continue
            out.append(previous)
            taken.add(id(previous))
            brought += 1
            used += len(previous.text) + 4
        out.append(s)
        taken.add(id(s))
        used += cost
        after = group[s.pos + 1] if s.pos + 1 < len(group) else None
        if (
            s.text.rstrip().endswith(("；", ";"))
            and after is not None
            and id(after) not in taken
            and after.kind == "text"
            and REFERS_BACK.match(after.text)
            and used + len(after.text) + 4 <= max_chars
        ):
            # "GRU是LSTM结构的变式；" goes on in "它将忘记门和输入门合并成……": the clause it ends with a semicolon says
            # half of it
            out.append(after)
            taken.add(id(after))
            brought += 1
            used += len(after.text) + 4
    return out


def repeats(text: str, quoted: str) -> bool:
    """Whether `text` says again what `quoted` says: a piece of it, or a copy the notes made with another ending
    (its opening written in `quoted`, REPEATED_SHARE of its characters in runs `quoted` also holds). Items of
    one list open differently ("one-shot：……", "few-shot：……"), however alike the rest."""
    text, quoted = text.strip(), quoted.strip()
    if not text or text in quoted:
        return True
    if text[:REPEATED_OPENING] not in quoted:
        return False
    blocks = SequenceMatcher(None, quoted, text, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks if b.size >= 4) >= REPEATED_SHARE * len(text)


def _second(pool: Sequence[Candidate], best: Candidate, chosen: Sequence[Sentence], reading: Reading) -> Candidate | None:
    """A sentence of another passage that answers a part of the question the first span leaves open."""
    profile = reading.profile
    clauses = len(re.findall(r"[？?]", profile.text)) + len(re.findall(r"[，,；;]\s*(?:还有|以及|并且|另外|and\b)", profile.text))
    # "生成式模型和判别式模型分别对什么概率建模？" asks the same of two things: as a comparison does
    compared = "compare" in profile.types or _ASKS_EACH.search(profile.text) is not None
    if not compared and clauses < 2:
        return None
    covered = normalize(" ".join(s.text for s in chosen))
    open_words = {t: w for t, w in profile.words.items() if t not in covered}
    if not open_words:
        return None
    # a comparison whose first span leaves one of the things compared unnamed asks for the other's sentence more
    margin = SECOND_PASSAGE_MARGIN * (2 if compared and set(profile.subject) & set(open_words) else 1)
    others = [t for t in profile.subject if t in open_words] if compared else []
    answering = [
        c
        for c in pool[1:6]
        if c.passage != best.passage
        and c.score >= best.score - margin
        and coverage(normalize(c.sentence.text + " " + c.sentence.heading), open_words) >= SECOND_PASSAGE_GAIN
    ]
    # the other compared thing's own section says what it is first ("校验集和测试集有什么区别？" answered from the 校验集
    # section), though its sentence shares fewer of the question's words than sentences that merely name both
    # (HMM's "……是一种生成式模型" for "生成式模型和判别式模型分别……")
    own = next((c for c in answering if any(t in normalize(c.sentence.heading) for t in others)), None)
    if own is not None:
        return own
    for c in pool[1:]:
        if c.score < best.score - COMPARED_SECTION_MARGIN:
            break
        if c.passage != best.passage and any(t in normalize(c.sentence.heading) for t in others):
            return c if reads_as_sentence(c.sentence.text) else None
    if answering:
        return answering[0]
    # the best passage itself defines both ("zero-shot：……" and "few-shot（又称为in-context learning）：……" for
    # "Few-shot 和 Zero-shot 的区别是什么？"): its sentence that names the other one
    return next(
        (
            c
            for c in pool[1:]
            if c.score >= best.score - COMPARED_SECTION_MARGIN
            and c.passage == best.passage
            and c.sentence not in chosen
            and any(t in normalize(c.sentence.text) for t in others)
            and reads_as_sentence(c.sentence.text)
        ),
        None,
    )
