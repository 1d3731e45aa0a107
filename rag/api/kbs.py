"""Routes of knowledge bases (`/kbs`) and of deleting a note (`DELETE /documents/{doc_id}`).

A knowledge base made over HTTP always gets its notes folder under the data dir: an HTTP client never points
the service at a folder of the server (`rag kb create --corpus DIR` can). Listing one shows that folder only
relative to the data dir, never a server path. Counts come from the loaded engine, or from the published
manifest of a local index that is not loaded (cheap: one small file); a knowledge base is never loaded just
to be listed.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from pydantic import BeforeValidator
from starlette.responses import Response

from ingest.corpus import delete_note
from rag.api.knowledge import KbQuery, kb_name, pool_of, registry_of, settings_for
from rag.api.responses import json_response
from rag.api.routes import JobsDep, WorkerDep, strict_flag
from rag.api.schemas import (
    ERRORS,
    KB_PATTERN,
    DocumentDeleted,
    KbCreate,
    KbDetail,
    KbList,
    KbRename,
    KbSummary,
)
from rag.config import Settings
from rag.engine_pool import EnginePool
from rag.errors import IngestBusy, RagError
from rag.index import open_store
from rag.knowledge_bases import KnowledgeBase, KnowledgeBaseBusy, KnowledgeBaseRegistry, kb_settings

KbPath = Annotated[str, PathParam(max_length=63, pattern=KB_PATTERN, description="The knowledge base's name.")]
router = APIRouter(responses=ERRORS)


def _published_counts(settings: Settings) -> dict[str, Any]:
    """Version and counts of the published manifest, read without loading the index ({} if none). A Milvus Lite
    file is not opened here: Lite lets one client hold it, and the knowledge base's own engine may want it."""
    if settings.index_backend == "milvus" and not settings.milvus_uri:
        return {}
    with contextlib.suppress(RagError, OSError, ValueError):
        manifest = open_store(settings).published_manifest()
        if manifest is None:
            return {}
        return {"version": manifest.version, **_counts(manifest.counts)}
    return {}


def _counts(counts: dict[str, Any]) -> dict[str, Any]:
    return {"documents": counts.get("documents", 0), "chunks": counts.get("chunks", 0)}


def kb_summary(kb: KnowledgeBase, registry: KnowledgeBaseRegistry, pool: EnginePool) -> dict[str, Any]:
    """What GET /kbs shows of one knowledge base (blocking: reads a small file)."""
    settings = registry.settings
    loaded = dict(pool.engines()).get(kb.name)
    if loaded is not None and loaded.ready:
        stats = loaded.stats()
        counts = {"version": stats.get("version"), **_counts(stats)}
    else:
        counts = _published_counts(kb_settings(settings, kb))
    corpus = None
    data_dir = settings.data_dir.resolve()
    folder = registry.corpus_dir(kb).resolve()
    if kb.corpus is not None and kb.owns_corpus and folder.is_relative_to(data_dir):
        corpus = folder.relative_to(data_dir).as_posix()
    return {
        "name": kb.name,
        "default": kb.name == settings.default_kb,
        "loaded": loaded is not None,
        "version": None,
        "documents": None,
        "chunks": None,
        **counts,
        "corpus": corpus,
        "managed_corpus": kb.owns_corpus,
        "created": kb.created,
        "overrides": kb.overrides,
    }


@router.get("/kbs", response_model=KbList, tags=["knowledge bases"])
async def list_kbs(request: Request) -> Response:
    """Every knowledge base (the default one first): whether it is loaded, its index version and counts."""
    registry, pool = registry_of(request), pool_of(request)

    def listing() -> list[dict[str, Any]]:
        return [kb_summary(kb, registry, pool) for kb in registry.list()]

    settings = registry.settings
    kbs = await anyio.to_thread.run_sync(listing)
    return json_response({"kbs": kbs, "default": settings.default_kb, "max_kbs": settings.max_kbs})


@router.post("/kbs", status_code=201, response_model=KbSummary, tags=["knowledge bases"])
async def create_kb(body: KbCreate, request: Request) -> Response:
    """Create a knowledge base with an empty notes folder under the data dir (upload notes, then POST /ingest
    with its `kb`). 400 for a bad name or override, 409 when it exists or RAG_MAX_KBS are reached."""
    registry, pool = registry_of(request), pool_of(request)

    def create() -> dict[str, Any]:
        return kb_summary(registry.create(body.name, overrides=body.overrides.model_dump(exclude_none=True)), registry, pool)

    return json_response(await anyio.to_thread.run_sync(create), 201)


@router.get("/kbs/{kb}", response_model=KbDetail, tags=["knowledge bases"])
async def show_kb(kb: KbPath, request: Request, jobs: JobsDep, worker: WorkerDep) -> Response:
    """One knowledge base: counts, index version, settings overrides, its latest ingest job and, when loaded,
    its stats."""
    registry, pool = registry_of(request), pool_of(request)
    name = kb_name(request, kb)
    summary = await anyio.to_thread.run_sync(lambda: kb_summary(registry.get(name), registry, pool))
    engine = dict(pool.engines()).get(name)
    stats = await worker.run(engine.stats) if engine is not None else None
    return json_response({**summary, "ingest_job": jobs.latest(name), "stats": stats})


def _refuse_while_ingesting(jobs: Any, name: str, doing: str) -> None:
    if jobs.running(name):
        raise KnowledgeBaseBusy(f"knowledge base {name!r} cannot be {doing} while its ingest runs; try again when it ends")


@router.patch("/kbs/{kb}", response_model=KbSummary, tags=["knowledge bases"])
async def rename_kb(kb: KbPath, body: KbRename, request: Request, jobs: JobsDep) -> Response:
    """Rename a knowledge base (its folders stay where they are; `default` keeps its name). Conversations
    stored under the old name no longer find it."""
    registry, pool = registry_of(request), pool_of(request)
    name = kb_name(request, kb)
    _refuse_while_ingesting(jobs, name, "renamed")

    def rename() -> dict[str, Any]:
        renamed = registry.rename(name, body.name)
        pool.unload(name)
        if hasattr(jobs, "forget"):
            jobs.forget(name)
        return kb_summary(renamed, registry, pool)

    return json_response(await anyio.to_thread.run_sync(rename))


@router.delete("/kbs/{kb}", tags=["knowledge bases"])
async def delete_kb(
    kb: KbPath,
    request: Request,
    jobs: JobsDep,
    delete_notes: Annotated[
        bool,
        Query(description="Also remove its notes folder (only one the service made; true or false)."),
        BeforeValidator(strict_flag),
    ] = False,
) -> Response:
    """Delete a knowledge base: unload it and remove its index; its notes stay unless `delete_notes=true`.
    409 while its ingest runs; the default knowledge base cannot be deleted."""
    registry, pool = registry_of(request), pool_of(request)
    name = kb_name(request, kb)
    _refuse_while_ingesting(jobs, name, "deleted")

    def delete() -> None:
        registry.delete(name, delete_notes=delete_notes)  # refuses `default`, an unknown or a busy one first
        pool.unload(name)
        if hasattr(jobs, "forget"):
            jobs.forget(name)

    await anyio.to_thread.run_sync(delete)
    return json_response({"name": name, "deleted": True, "notes_deleted": delete_notes})


@router.delete("/documents/{doc_id:path}", status_code=202, response_model=DocumentDeleted, tags=["knowledge base"])
async def delete_document(doc_id: str, request: Request, jobs: JobsDep, worker: WorkerDep, kb: KbQuery = None) -> Response:
    """Remove a note (any file ingest reads) from knowledge base `kb`'s corpus folder and start the re-ingest
    that drops it from the index (202 with the job; follow it at GET /ingest/{job_id}). 409 while an ingest of
    that knowledge base runs, 404 for a file that is not in its corpus."""
    name, settings = await settings_for(request, kb)
    if jobs.running(name):
        raise KnowledgeBaseBusy(
            f"another ingest is running on knowledge base {name!r}; delete the note when it has finished"
        )
    deleted = await worker.run(delete_note, settings.corpus_dir, doc_id)
    try:
        job = await anyio.to_thread.run_sync(lambda: jobs.start(kb=name))
    except IngestBusy:
        raise IngestBusy(
            f"{doc_id} was removed, but another ingest of {name!r} started meanwhile: run POST /ingest when it ends"
        ) from None
    return json_response({**deleted, "kb": name, "job": job}, 202)
