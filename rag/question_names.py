"""The names a question spells: its Latin names, and the terms it glosses in parentheses.

Pure functions over the question's text, read by the relevance gate (a name the notes never spell) and by the
reader's refusal rules (a name no passage read spells) and its choice of what leads (the names an English
question asks about together).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rag.text import CJK_CHARS, JOINING_CHARS, is_cjk, normalize, singular, spelled_as_one

# The Latin names of a Chinese question, words run together as one ("focal loss", "p-tuning v2").
_LATIN_NAME_RUN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:\s+[a-z0-9]+(?:-[a-z0-9]+)*)*")
# A name as an English sentence spells it: an acronym ("HNSW"), an inner capital ("efConstruction", "XLNet")
# or letters with digits ("FP16"). Plain words ("speculative") are not names: English questions use them freely.
ENGLISH_NAME = re.compile(r"(?<!\w)(?:[A-Za-z]*[A-Z][a-z0-9]*[A-Z0-9][A-Za-z0-9]*|[a-z]+[A-Z][A-Za-z0-9]*|[A-Za-z]+[0-9][A-Za-z0-9]*)(?!\w)")

# ... and capitalized words inside a sentence, which English capitalizes only in names ("Focal Loss", "Adam").
_ENGLISH_TITLE_NAME = re.compile(r"(?<=[\w,;:)][ ])(?!I\b)[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*\b")

GLOSSED_RUN = 16  # characters before a gloss read for the Chinese term it glosses (at most 8 of them count)
# a term given in parentheses: a Chinese name, or a Latin one of up to four words; not an example or an aside
GLOSS = re.compile(
    rf"[（(]\s*(?!比如|例如|如|即|包括|也就是)(?P<term>[{CJK_CHARS}]{{2,8}}|[A-Za-z][A-Za-z0-9\-]*(?: [A-Za-z0-9\-]+){{0,3}})\s*[）)]"
)


def _names_side_by_side(run: str, typed: set[str]) -> list[str]:
    """A run of Latin words cut between two words that are each typed as a name (`typed`: acronyms, inner
    capitals, digits): "LSTM GRU" and "word2vec CBOW" are two names, "KV cache" and "focal loss" one."""
    names: list[list[str]] = []
    for word in run.split():
        if names and not (word in typed and names[-1][-1] in typed):
            names[-1].append(word)
        else:
            names.append([word])
    return [" ".join(words) for words in names]


def latin_names(query: str) -> list[str]:
    """The names a question spells in Latin letters, normalized: a Chinese question's runs of Latin words
    ("focal loss"), an English question's names (acronyms, inner capitals, digits: "DDPG", "XLNet")."""
    if is_cjk(query):
        typed = {normalize(m) for m in ENGLISH_NAME.findall(query)}
        return [name for run in _LATIN_NAME_RUN.findall(normalize(query)) for name in _names_side_by_side(run, typed)]
    names = [normalize(m) for m in ENGLISH_NAME.findall(query)]
    for match in _ENGLISH_TITLE_NAME.finditer(query):
        name = normalize(match.group(0))
        if not any(name in n or n in name for n in names):
            names.append(name)
    return names


def glossed_run(text: str, gloss: re.Match[str]) -> str:
    """The run of Chinese (up to 8 characters) right before a gloss in `text` ("负采样" of "负采样（negative
    sampling）"); "" when there is none."""
    before = re.search(rf"[{CJK_CHARS}]{{2,8}}$", text[max(0, gloss.start() - GLOSSED_RUN) : gloss.start()].rstrip())
    return before.group(0) if before else ""


def without_glosses(text: str, known: str) -> str:
    """`text` without the Latin names it gives in parentheses after a Chinese term `known` writes ("负采样（negative
    sampling）"): a gloss of a term the notes use names nothing new, whatever the notes call it in English."""

    def drop(match: re.Match[str]) -> str:
        term = match.group("term")
        # the whole run of Chinese before it, or what follows a character that joins a term to its clause
        # ("用负采样（…）"); not any tail ("检查点" of 梯度检查点, a term the notes never write)
        run = glossed_run(text, match)
        glossed = any(
            (i == 0 or run[i - 1] in JOINING_CHARS) and run[i:] in known for i in range(len(run) - 1)
        )
        return " " if glossed and not is_cjk(term) else match.group(0)

    return GLOSS.sub(drop, text)


def written_together(words: Sequence[str], texts: Sequence[str]) -> bool:
    """Whether one of the normalized `texts` writes every one of the (normalized) Latin `words` as a word of its
    own: "lora" and "rank" in the LoRA section, though never side by side."""
    patterns = [spelled_as_one([w]) for w in words]
    return bool(patterns) and any(all(p.search(text) for p in patterns) for text in texts)


# "Is a false positive a Type I or a Type II error?" asks which one, not how they relate
_ASKS_WHICH_ONE = re.compile(r"\b(?:or|either|whether)\b", re.I)


def names_asked_together(question: str, is_word: Callable[[str], bool]) -> list[tuple[str, ...]]:
    """The Latin names an English question asks about together that the notes write, each as written and in the
    singular ("rnns": rnns, rnn); [] for a question of one name, or one asking which of them ("A or B")."""
    if is_cjk(question) or _ASKS_WHICH_ONE.search(question):
        return []
    forms = [tuple(dict.fromkeys((name, singular(name)))) for name in latin_names(question)]
    known = [f for f in forms if any(is_word(form) for form in f)]
    return known if len(known) >= 2 else []
