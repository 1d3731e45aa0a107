"""A follow-up about the subject's successor ("它的第二版", "其改进版", "its second version") and what to call it.

Notes name a numbered version by its versioned name ("GPT-2", "DCN-v2"), not "GPT 的第二版": the follow-up asks
about that name, spelled as the notes spell it where they do.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rag.text import is_cjk

_NUMBERS = {"二": 2, "三": 3, "四": 4, "五": 5, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4}
_ZH_SUCCESSOR = re.compile(
    r"(?P<ref>(?:它们?|其|这个|该)的?)?"
    r"(?P<what>第(?P<n>[二三四五2-5])[个]?(?:版本?|代)|(?P<n2>[二三四五2-5])代|新版本?|新一代|下一代|后续版本"
    r"|改进版本?|改良版本?|升级版本?|增强版|变体|变种|(?<![A-Za-z0-9])[vV](?P<n3>[2-5])(?![\d.]))"
)
_EN_SUCCESSOR = re.compile(
    r"(?P<ref>\b(?:its|their|the|this|that)\s+)?"
    r"(?P<what>\b(?:(?P<n>second|third|fourth|2nd|3rd|4th)\s+(?:version|generation|edition)"
    r"|(?:next|new|newer|improved|updated|later)\s+(?:version|generation|variant)|successor|variants?"
    r"|v(?P<n3>[2-5]))\b)",
    re.I,
)
_LATIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+#.\-]*")


def successor(text: str) -> re.Match[str] | None:
    """A "second version / 改进版" phrase in the question."""
    return _ZH_SUCCESSOR.search(text) or _EN_SUCCESSOR.search(text)


def versioned_names(name: str, n: int) -> list[str]:
    """The ways notes write version `n` of `name`: "GPT-2", "GPT-V2" (hyphens, spaces and case aside, as
    `rag.notes_spelling.writes` compares them)."""
    return [f"{name}-{n}", f"{name}-V{n}"]


def successor_phrase(match: re.Match[str], subject: str, known: Callable[[str], bool] | None) -> str:
    """What the successor phrase `match` stands for, for `subject`: "它的第二版" -> "GPT-2" where the notes write
    GPT-2 (`known`: whether the notes write a name; "GPT-V2" where they write no version), or every versioned name
    ("DCN DCN-V2 DCN V2 DCN-2") without `known`; a successor without a number stays a phrase ("BERT的改进版")."""
    what = match.group("what")
    groups = match.groupdict()
    number = groups.get("n") or groups.get("n2") or groups.get("n3")
    n = _NUMBERS.get(number.lower(), number) if number else None
    name = _LATIN_NAME.search(subject)
    if n and name:
        forms = versioned_names(name.group(0), int(n))
        if known is None:
            return f"{subject} {forms[1]} {name.group(0)} V{n} {forms[0]}"
        # the name the notes write, or one they can be seen not to (the question is then refused as such)
        return next((form for form in forms if known(form)), forms[1])
    if is_cjk(what):
        return f"{subject}的{what}"
    return f"{subject}'s {what}" if match.group("ref") else f"{subject} {what}"
