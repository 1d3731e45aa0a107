"""Adjacent-chunk merging: hits on neighbouring chunks of one section become one passage, and a passage reads on
into the next chunk of its section. Pure functions.

A passage that ingest cut in two reads whole again, and its citation spans both halves: the merged chunk's
text is exactly the note's text from the first chunk's start to the second's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rag.types import Chunk, Hit


def merge_adjacent(hits: list[Hit]) -> list[Hit]:
    """Merge hits on neighbouring chunks of the same section into one passage; drop duplicates.

    The merged hit keeps the better rank and score; its chunk spans both originals.
    """
    merged: list[Hit] = []
    for hit in hits:
        target = None
        for kept in merged:
            if _adjacent(kept.chunk, hit.chunk):
                target = kept
                break
        if target is None:
            if any(hit.chunk.chunk_id in kept.chunk_ids or _contains(kept.chunk, hit.chunk) for kept in merged):
                continue
            merged.append(hit)
            continue
        target.chunk = _join(target.chunk, hit.chunk)
        target.chunk_ids = tuple(dict.fromkeys(target.chunk_ids + hit.chunk_ids))
        for name in ("bm25_score", "dense_score", "rerank_score", "sentence_similarity"):
            mine, theirs = getattr(target, name), getattr(hit, name)
            if theirs is not None and (mine is None or theirs > mine):
                setattr(target, name, theirs)
        for name in ("bm25_rank", "dense_rank"):
            mine, theirs = getattr(target, name), getattr(hit, name)
            if theirs is not None and (mine is None or theirs < mine):
                setattr(target, name, theirs)
    return merged


def continued(hits: list[Hit], following: Sequence[Chunk | None]) -> list[Hit]:
    """Each hit read on into the next chunk of its section (`following[i]`: the chunk after hit i's last one in
    its note, or None); hits that then meet are merged, as `merge_adjacent` does.

    Ingest cuts a long section into chunks of a few hundred characters, and what a matched chunk leads into
    often completes it: a lead-in's list, a definition's consequences, the rest of a list ("……出现了小模型中
    不存在的能力" is followed by the chunk naming the three). The hits themselves are not changed.
    """
    out = []
    for hit, after in zip(hits, following, strict=True):
        if after is not None and _adjacent(hit.chunk, after) and after.start > hit.chunk.start:
            hit = replace(hit, chunk=_join(hit.chunk, after), chunk_ids=(*hit.chunk_ids, after.chunk_id))
        out.append(hit)
    return merge_adjacent(out)


def _contains(outer: Chunk, inner: Chunk) -> bool:
    return outer.doc_id == inner.doc_id and outer.start <= inner.start and inner.end <= outer.end


def _adjacent(a: Chunk, b: Chunk) -> bool:
    if a.doc_id != b.doc_id or a.heading_path != b.heading_path:
        return False
    lo, hi = (a, b) if a.start <= b.start else (b, a)
    # contiguous or overlapping spans only, so the merged text is exactly a slice of the note
    return lo.end >= hi.start and hi.end > lo.end


def _join(a: Chunk, b: Chunk) -> Chunk:
    lo, hi = (a, b) if a.start <= b.start else (b, a)
    text = lo.text + hi.text[lo.end - hi.start :]
    # ingest writes "heading path\ncleaned text", or only the cleaned text (never starting "\n") without headings
    index_text = lo.index_text + "\n" + hi.index_text.removeprefix(" > ".join(hi.heading_path) + "\n")
    return Chunk(
        chunk_id=lo.chunk_id,
        doc_id=lo.doc_id,
        heading_path=lo.heading_path,
        start=lo.start,
        end=hi.end,
        text=text,
        index_text=index_text,
        ordinal=lo.ordinal,
        page=lo.page,
        page_breaks=lo.page_breaks + tuple(b for b in hi.page_breaks if b > lo.end),
    )
