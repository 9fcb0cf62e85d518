"""aiopay_auth's events through the standard logging module.

The library logs to the ``"aiopay_auth"`` logger and stays silent until
the application configures logging. Each record's message reads
``event key=value ...``, and its structured fields are on
``record.aiopay_auth``.
"""

import asyncio
import logging
import sys

from aiopay_auth import TokenManager
from aiopay_auth.testing import FakeProvider, Scripted, provider_for


class KeepFields(logging.Handler):
    """Collects the structured fields of every aiopay_auth record."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.fields.append(getattr(record, "aiopay_auth", {}))


async def main() -> None:
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(levelname)-7s %(message)s",
    )
    library = logging.getLogger("aiopay_auth")
    library.setLevel(logging.DEBUG)  # all of the library's events
    kept = KeepFields()
    library.addHandler(kept)

    async with (
        FakeProvider("cm", lifetime=1.0) as fake,
        TokenManager() as tokens,
    ):
        holder = tokens.add(provider_for(fake))
        token = await holder.get()
        # The next token call fails; the refresher retries and recovers.
        fake.queue(Scripted(status=503, body="down for maintenance"))
        await asyncio.sleep(token.lifetime)  # outlive the first token
        await holder.get()

    for fields in kept.fields:
        if fields["event"] == "aiopay_auth.fetch_failed":
            print("fields of the failure:", fields)


if __name__ == "__main__":
    asyncio.run(main())
