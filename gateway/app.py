"""HTTP routes `POST /webhooks/{provider}`.

Answers: 2xx when the report is recorded or cannot ever be (unknown reference — the provider should stop
retrying); 401 bad signature; 400 malformed; 413 too large; 503 while Temporal or the ledger is unavailable,
so the provider retries later.

Every report kaskad issued the reference for is written to the ledger after its workflow was signalled —
also when that workflow has closed (a late report): the ledger's figures count it, the workflow's cannot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from domain.models import ERROR_MAX, MESSAGE_ID_MAX, DeliveryReport
from domain.refs import ClientRef
from ledger.store import Change, Ledger
from providers.base import MALFORMED, ParsedReport, ProviderAdapter, ReportBatch, WebhookRejected, WebhookRequest
from runtime.logs import log_safe
from workflows.recipient import RecipientCascadeWorkflow

log = logging.getLogger("kaskad.gateway")

MAX_BODY_BYTES = 1_000_000
_GONE = (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)


def create_gateway(client: Client, providers: Mapping[str, ProviderAdapter], ledger: Ledger | None = None) -> FastAPI:
    """`ledger`: where every report is recorded (None only in tests of the HTTP surface)."""
    app = FastAPI(title="kaskad webhook gateway")

    @app.post("/webhooks/{provider}")
    async def webhook(provider: str, request: Request) -> JSONResponse:
        adapter = providers.get(provider)
        if adapter is None:
            return JSONResponse({"error": f"unknown provider {provider!r}"}, status_code=404)
        body = await _read_limited(request)
        if body is None:
            return JSONResponse({"error": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            reports = parse_reports(adapter, webhook_request(request, body))
        except WebhookRejected as exc:
            log.warning("%s webhook refused (%s): %s", provider, exc.status_code, log_safe(exc.reason))
            return JSONResponse({"error": log_safe(exc.reason)}, status_code=exc.status_code)
        skipped = reports.skipped
        if skipped:  # the batch's other reports are applied: the provider must not retry or drop them all
            log.warning(
                "%s webhook: %d of %d reports skipped as malformed, first: %s",
                provider,
                len(skipped),
                len(skipped) + len(reports),
                log_safe(skipped[0]),
            )
        recorded = 0
        for report in reports:
            try:
                recorded += await _signal(client, report, provider, ledger)
            except (RPCError, RuntimeError) as exc:  # RuntimeError: a lazy client that cannot connect
                log.error("Temporal unavailable for a %s report: %s", provider, type(exc).__name__)
                return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
            except (OperationalError, InterfaceError) as exc:  # down, locked or timed out: worth a retry
                log.error("the ledger is unavailable for a %s report: %s", provider, type(exc).__name__)
                return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        answer = {"received": len(reports), "recorded": recorded}
        return JSONResponse(answer | {"skipped": len(skipped)} if skipped else answer)

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def parse_reports(adapter: ProviderAdapter, request: WebhookRequest) -> ReportBatch:
    """The adapter's reports, with any failure to parse turned into WebhookRejected(400).

    Providers retry a 5xx for hours, so a malformed body must be a 400 whatever the adapter missed. A report
    that cannot be signalled (a lone surrogate in a text: Temporal's payload is UTF-8 JSON) is malformed too;
    in a batch it is skipped like the reports the adapter skipped, and only a body with nothing usable left is
    refused."""
    try:
        parsed = adapter.parse_webhook(request)
    except MALFORMED as exc:
        raise WebhookRejected(400, f"malformed {adapter.name} report ({type(exc).__name__})") from None
    batch = ReportBatch(skipped=parsed.skipped if isinstance(parsed, ReportBatch) else ())
    for report in parsed:
        try:
            for text in (report.client_ref, report.message_id, report.error):
                if text is not None:
                    text.encode("utf-8")
            if report.message_id is not None and len(report.message_id) > MESSAGE_ID_MAX:
                raise ValueError("message id too long")
        except MALFORMED as exc:
            batch.skipped.append(f"malformed {adapter.name} report ({type(exc).__name__})")
        else:
            batch.append(report)
    if not batch and batch.skipped:
        raise WebhookRejected(400, batch.skipped[0])
    return batch


def webhook_request(request: Request, body: bytes) -> WebhookRequest:
    """What an adapter needs of an HTTP request: raw body, lower-case headers, raw query, source address."""
    return WebhookRequest(
        body=body,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=request.url.query,
        client_ip=request.client.host if request.client else None,
    )


async def _read_limited(request: Request) -> bytes | None:
    """The raw body (signatures are computed over it), or None once it passes the size limit."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _signal(client: Client, report: ParsedReport, account: str, ledger: Ledger | None) -> int:
    """Signal the recipient workflow; 1 if it took the report, 0 if there is no such running workflow.

    `account` is the provider account whose webhook URL the report came to: the recipient applies it only to
    a step that account sent, so one authenticated sender cannot report on another's messages."""
    try:
        ref = ClientRef.parse(report.client_ref)
    except ValueError:
        log.warning("report with a reference kaskad did not issue; acknowledged and dropped")
        return 0
    handle = client.get_workflow_handle(ref.workflow_id)
    error = report.error[:ERROR_MAX] if report.error is not None else None
    signal = DeliveryReport(
        step=ref.step, status=report.status, message_id=report.message_id, error=error, at=report.at, account=account
    )
    late = False
    try:
        await handle.signal(RecipientCascadeWorkflow.report, signal)
    except RPCError as exc:
        if exc.status not in _GONE:
            raise
        late = True
        log.info(
            "late %s report for step %d of a finished or unknown workflow (mailing %s): recorded in the ledger",
            report.status.value,
            ref.step + 1,
            ref.mailing_id,
        )
    if ledger is not None:
        change = Change(report.status, report.at or datetime.now(UTC), error, report.message_id)
        try:
            await ledger.run(ledger.record_report, ref, account, change, reported_at=report.at, late=late)
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # a value the database refuses: a retry would not help, and 5xx means retry
            log.error("the ledger refused a %s report (%s); acknowledged", account, type(exc).__name__)
    return 0 if late else 1
