"""The one place that builds a Temporal client: pydantic payloads, namespace, TLS / API key."""

from __future__ import annotations

import gc
import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from runtime.settings import Settings
from workflows import search_attributes

_runtime: Runtime | None = None


def sdk_runtime() -> Runtime:
    """This process's Temporal core runtime (its Tokio threads), created on first use."""
    global _runtime
    if _runtime is None:
        # The core's own log lines (e.g. a gRPC call retried while the server restarts) go through Python
        # logging — to stderr where nothing else is configured — never onto stdout, where `--json` prints.
        logging_config = LoggingConfig(
            filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
        )
        _runtime = Runtime(telemetry=TelemetryConfig(logging=logging_config))
    return _runtime


def release_sdk_runtime() -> None:
    """Shut the core runtime's threads down while the interpreter is still whole.

    Left to interpreter teardown, those threads can call into Python while it finalises and abort the
    process ("PyGILState_Release … finalizing", temporalio/sdk-python#300). Call after the event loop closed.
    """
    global _runtime
    _runtime = None
    gc.collect()


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """Connect to the configured Temporal; `lazy` defers the first network call (the gateway starts
    even while Temporal is down and answers 503 until it is back)."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key,
        tls=True if settings.temporal_tls else None,  # None: TLS exactly when an API key is given
        data_converter=pydantic_data_converter,
        lazy=lazy,
        runtime=sdk_runtime(),
    )


async def register_search_attributes(client: Client) -> None:
    """Register kaskad's search attributes on a server that lacks them (test server, a new cluster)."""
    wanted = {key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in search_attributes.ALL}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=client.namespace, search_attributes=wanted)
    )
