"""How aiopay_auth logs.

A library must not write to its host's stdout uninvited, and structlog's
default configuration does exactly that. So by default every event goes to
the standard :mod:`logging` logger ``"aiopay_auth"``, which has a
:class:`logging.NullHandler`: silent until the application configures
logging. The message reads ``event key=value …``, and the structured
fields are attached to the record as ``record.aiopay_auth``.

An application that uses structlog calls :func:`use_structlog` once, and
events then go through ``structlog.get_logger("aiopay_auth")`` with the
application's own processors.

Events are namespaced (``aiopay_auth.token_fetched``) and never carry a
secret or a token: only fingerprints. No event carries ``exc_info`` either:
a renderer that shows frame locals (``structlog.processors.dict_tracebacks``,
rich or better-exceptions tracebacks) would print the token request's body.
An unexpected exception is logged by :meth:`_Log.crash` as its type, a
redacted message and a stack of ``file:line in function`` frames.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from typing import Any

import structlog

from ._secret import Redactor, Secret


__all__ = ["log", "use_structlog"]

_STACK_FRAMES = 20
_STDLIB = logging.getLogger("aiopay_auth")
_STDLIB.addHandler(logging.NullHandler())


def _render(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> tuple[tuple[str], dict[str, Any]]:
    event = event_dict.pop("event", "")
    fields = " ".join(f"{key}={value!r}" for key, value in event_dict.items())
    message = f"{event} {fields}" if fields else str(event)
    return (message,), {"extra": {"aiopay_auth": dict(event_dict, event=event)}}


def _stdlib_logger() -> Any:
    return structlog.wrap_logger(
        _STDLIB,
        processors=[structlog.stdlib.filter_by_level, _render],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class _Log:
    """Forwards to the current backend, so :func:`use_structlog` takes effect at once."""

    def __init__(self) -> None:
        self.target: Any = _stdlib_logger()

    def debug(self, event: str, **fields: object) -> None:
        self.target.debug(event, **fields)

    def info(self, event: str, **fields: object) -> None:
        self.target.info(event, **fields)

    def warning(self, event: str, **fields: object) -> None:
        self.target.warning(event, **fields)

    def error(self, event: str, **fields: object) -> None:
        self.target.error(event, **fields)

    def crash(
        self, event: str, exc: BaseException, *, secrets: Iterable[Secret | None], **fields: object
    ) -> None:
        """Log an unexpected exception at ERROR, without ``exc_info`` or frame locals."""
        self.target.error(event, **fields, **crash_fields(exc, Redactor(secrets)))


log = _Log()


def crash_fields(exc: BaseException, redactor: Redactor) -> dict[str, object]:
    """Describe *exc* for a log event: nothing a renderer could expand.

    Returns:
        ``exc_type``, ``exc_message`` (redacted, then scrubbed) and
        ``stack``: the innermost frames as ``file:line in function``, with
        no source line, no locals and no chained messages.
    """
    frames = traceback.extract_tb(exc.__traceback__)[-_STACK_FRAMES:]
    return {
        "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exc_message": redactor.quote(str(exc)),
        "stack": [f"{f.filename}:{f.lineno} in {f.name}" for f in frames],
    }


def use_structlog(enabled: bool = True) -> None:
    """Send aiopay_auth's events through structlog instead of standard logging.

    Call it once at start-up, after configuring structlog. Events then go
    to ``structlog.get_logger("aiopay_auth")`` and pass through your
    processors.

    Args:
        enabled: ``False`` goes back to standard logging.
    """
    log.target = structlog.get_logger("aiopay_auth") if enabled else _stdlib_logger()
