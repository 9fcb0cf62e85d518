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
secret or a token: only fingerprints.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog


__all__ = ["log", "use_structlog"]

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

    def exception(self, event: str, **fields: object) -> None:
        self.target.exception(event, **fields)


log = _Log()


def use_structlog(enabled: bool = True) -> None:
    """Send aiopay_auth's events through structlog instead of standard logging.

    Call it once at start-up, after configuring structlog. Events then go
    to ``structlog.get_logger("aiopay_auth")`` and pass through your
    processors.

    Args:
        enabled: ``False`` goes back to standard logging.
    """
    log.target = structlog.get_logger("aiopay_auth") if enabled else _stdlib_logger()
