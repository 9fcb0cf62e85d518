"""The ``aiopay-auth`` command line.

``aiopay-auth demo``
    Run a payment-worker fan against loopback fake providers and report
    what the client did and what the servers saw (see :mod:`aiopay_auth._demo`,
    imported only when this command runs).
    With ``--fleet N``, N worker processes share tokens through a local
    ``redis-server``, and the report sets the fleet's token fetches beside
    what per-process fetching would have cost.

    With ``--merchants N``, one provider API is served for N merchants
    through a tenant set, and the report checks that every request carried
    its own merchant's token.

``aiopay-auth token PROVIDER``
    Fetch one token from a real provider and describe it: its type, its
    lifetime and a fingerprint, never the token itself unless asked.
    Credentials come from the environment only, never from the command
    line, where other users and shell histories can read them.

Exit status: 0 on success; 1 when the demo saw a failure or the token
endpoint refused; 2 for a usage error (bad option, missing variable);
130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
from yarl import URL

from ._demo._config import EXIT_INTERRUPTED, MAX_MERCHANTS, MERCHANTS_LIFETIME, DemoConfig
from ._manager import TokenManager
from ._oauth import MIN_LIFETIME
from ._policy import RefreshPolicy
from ._provider import Provider
from ._secret import Secret
from ._token import Token
from .exceptions import AuthError, ConfigError, TokenUnavailableError
from .providers import cm, generic, oro, payme, vonage


__all__ = ["UsageError", "build_parser", "build_profile", "fetch_token", "format_token", "main"]

PROG: Final = "aiopay-auth"

ENV_CLIENT_ID: Final = "AIOPAY_CLIENT_ID"
ENV_CLIENT_SECRET: Final = "AIOPAY_CLIENT_SECRET"
ENV_USERNAME: Final = "AIOPAY_USERNAME"
ENV_PASSWORD: Final = "AIOPAY_PASSWORD"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

PROVIDERS: Final = ("cm", "vonage", "payme", "oro", "generic")
"""What ``aiopay-auth token`` can ask."""

# Options that mean something to one provider only, and the provider.
_ONLY_FOR: Final[Mapping[str, str]] = {
    "region": "vonage",
    "environment": "payme",
    "audience": "payme",
    "app_url": "oro",
    "application": "oro",
}
# What each provider cannot do without.
_REQUIRED: Final[Mapping[str, tuple[str, str]]] = {
    "vonage": ("region", "--region (nam, emea or apac)"),
    "payme": ("environment", "--environment (development, pre-production or production)"),
    "oro": ("app_url", "--app-url (the application's URL)"),
    "generic": ("token_url", "--token-url"),
}
# Providers whose dialect has a password grant.
_PASSWORD_GRANT: Final = frozenset({"vonage", "payme", "generic"})


class UsageError(Exception):
    """A command line or environment that cannot work; exit status 2.

    The message is one line and never contains a secret.
    """


# --- the parser -------------------------------------------------------------


def _positive(
    kind: Callable[[str], float], *, at_least: float | None = None, at_most: float | None = None
) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            msg = f"not a number: {text!r}"
            with contextlib.suppress(ValueError):
                float(text)
                msg = f"not an integer: {text!r}"  # a number, only not of this kind
            raise argparse.ArgumentTypeError(msg) from None
        if not value > 0:
            msg = f"must be positive, not {text}"
            raise argparse.ArgumentTypeError(msg)
        if at_least is not None and value < at_least:
            msg = f"must be at least {at_least:g}, not {text}"
            raise argparse.ArgumentTypeError(msg)
        if at_most is not None and value > at_most:
            msg = f"must be at most {at_most:g}, not {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


_TOKEN_EPILOG = f"""\
credentials come from the environment, never from the command line:
  {ENV_CLIENT_ID}, {ENV_CLIENT_SECRET}   always
  {ENV_USERNAME}, {ENV_PASSWORD}         the password grant, when both are set
                                           (vonage, payme and generic)

examples:
  {PROG} token cm
  {PROG} token vonage --region emea
  {PROG} token payme --environment development
  {PROG} token oro --app-url https://shop.example.com --application storefront
  {PROG} token generic --token-url https://auth.example.com/oauth/token
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``aiopay-auth`` argument parser, with its ``demo`` and ``token`` commands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keep OAuth2 bearer tokens fresh for asyncio payment workers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run a payment-worker fan against loopback fake providers",
        description=(
            "Start fake CM.com, Vonage, Pay-me and Oro (back office and storefront) "
            "providers on 127.0.0.1 with short-lived tokens, send payments to all five "
            "through one pooled session, and report per provider what the client did "
            "and what the servers saw. Exits 1 if any request failed or was refused "
            "for an expired token."
        ),
    )
    defaults = DemoConfig()
    demo.add_argument(
        "--duration",
        type=_positive(float),
        default=defaults.duration,
        metavar="SECONDS",
        help="how long the workers send requests (default: %(default)g)",
    )
    demo.add_argument(
        "--concurrency",
        type=_positive(int),
        default=defaults.concurrency,
        metavar="N",
        help="concurrent workers (default: %(default)d)",
    )
    demo.add_argument(
        "--pool",
        type=_positive(int),
        default=defaults.pool,
        metavar="N",
        help="connections in the shared session's pool (default: %(default)d)",
    )
    demo.add_argument(
        "--lifetime",
        type=_positive(float, at_least=MIN_LIFETIME),
        default=None,
        metavar="SECONDS",
        help=(
            f"lifetime of each fake token (default: {defaults.lifetime:g}; "
            f"{MERCHANTS_LIFETIME:g} with --merchants)"
        ),
    )
    demo.add_argument(
        "--servers",
        choices=("child", "inline"),
        default=defaults.servers,
        help=(
            "run the fake servers in a child process, or in the demo's own event loop "
            "(default: %(default)s)"
        ),
    )
    demo.add_argument(
        "--fleet",
        type=_positive(int),
        default=None,
        metavar="N",
        help=(
            "run N worker processes that share tokens through a local redis-server "
            "(needs redis-server and the redis extra); the workers and the pool are "
            "split between them, and the summary sets the fleet's token fetches beside "
            "what per-process fetching would have cost"
        ),
    )
    demo.add_argument(
        "--merchants",
        type=_positive(int, at_most=MAX_MERCHANTS),
        default=None,
        metavar="N",
        help=(
            f"serve one CM.com API for N merchants (at most {MAX_MERCHANTS:,}) through "
            "tenants: the fake provider "
            "accepts N merchants' credentials, each request names its merchant, and the "
            "summary checks that every request carried its own merchant's token and that "
            "token calls stayed within the cap"
        ),
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    demo.set_defaults(handler=_run_demo)

    token = commands.add_parser(
        "token",
        help="fetch one token from a provider and describe it",
        description=(
            "Fetch one token from a provider and print its type, lifetime and\n"
            "fingerprint (the token itself only with --show-token)."
        ),
        epilog=_TOKEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("provider", choices=PROVIDERS, metavar="PROVIDER", help=", ".join(PROVIDERS))
    token.add_argument("--region", choices=vonage.REGIONS, help="vonage: the account's region")
    token.add_argument(
        "--environment", choices=tuple(payme.ENVIRONMENTS), help="payme: the environment"
    )
    token.add_argument("--audience", help="payme: the API audience (default: the environment's)")
    token.add_argument("--app-url", metavar="URL", help="oro: the application's URL")
    token.add_argument(
        "--application",
        choices=("backoffice", "storefront"),
        help="oro: which API the token is for (default: backoffice)",
    )
    token.add_argument(
        "--token-url", metavar="URL", help="the token endpoint (required for generic)"
    )
    token.add_argument(
        "--api",
        metavar="URL",
        help="the API base the token is for (generic: default the token URL's origin)",
    )
    token.add_argument("--scope", help="space-separated scope to ask for")
    token.add_argument(
        "--client-auth",
        choices=("body", "basic"),
        help="send the client credentials in the body or as HTTP Basic",
    )
    token.add_argument(
        "--timeout",
        type=_positive(float),
        default=10.0,
        metavar="SECONDS",
        help="give up after this long (default: %(default)g)",
    )
    token.add_argument(
        "--show-token", action="store_true", help="also print the access token itself"
    )
    token.set_defaults(handler=_run_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``aiopay-auth`` command line.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]``
            when ``None``.

    Returns:
        The exit status.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)


# --- demo -------------------------------------------------------------------


def _run_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo loads aiohttp.web, the fake servers and the
    # fleet, which the token command does not need. A Ctrl-C while they load
    # ends the demo as one during its run does.
    try:
        from ._demo._fleet import fleet_requirements, run_fleet_demo  # noqa: PLC0415
        from ._demo._merchants import run_merchants_demo  # noqa: PLC0415
        from ._demo._report import (  # noqa: PLC0415
            fleet_summary_to_dict,
            format_fleet_table,
            format_merchants_table,
            format_table,
            merchants_summary_to_dict,
            summary_to_dict,
        )
        from ._demo._results import exit_status  # noqa: PLC0415
        from ._demo._run import run_demo  # noqa: PLC0415
    except KeyboardInterrupt:
        _error("demo", "interrupted")
        return EXIT_INTERRUPTED
    if args.fleet and args.merchants:
        _error("demo", "--merchants and --fleet cannot be combined")
        return EXIT_USAGE
    lifetime = args.lifetime
    if lifetime is None:
        lifetime = MERCHANTS_LIFETIME if args.merchants else DemoConfig().lifetime
    config = DemoConfig(
        lifetime=lifetime,
        duration=args.duration,
        concurrency=args.concurrency,
        pool=args.pool,
        servers=args.servers,
        fleet=args.fleet or 0,
        merchants=args.merchants or 0,
    )
    if config.fleet:
        missing = fleet_requirements()
        if missing is not None:
            _error("demo", missing)
            return EXIT_USAGE
    progress = None if args.quiet else sys.stderr
    live = progress is not None and progress.isatty()
    try:
        if config.merchants:
            merchants = asyncio.run(run_merchants_demo(config, progress=progress, live=live))
        elif config.fleet:
            fleet = asyncio.run(run_fleet_demo(config, progress=progress, live=live))
            summary = fleet.summary
        else:
            summary = asyncio.run(run_demo(config, progress=progress, live=live))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _error("demo", "interrupted")
        return EXIT_INTERRUPTED
    except (OSError, RuntimeError) as err:  # no port, no child process, ...
        _error("demo", str(err) or type(err).__name__)
        return EXIT_FAILED
    if config.merchants:
        print(
            json.dumps(merchants_summary_to_dict(merchants), indent=2)
            if args.json
            else format_merchants_table(merchants)
        )
        return merchants.exit_status()
    if config.fleet:
        print(
            json.dumps(fleet_summary_to_dict(fleet), indent=2)
            if args.json
            else format_fleet_table(fleet)
        )
    elif args.json:
        print(json.dumps(summary_to_dict(summary), indent=2))
    else:
        print(format_table(summary))
    return exit_status(summary)


# --- token ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Credentials:
    client_id: str
    client_secret: Secret
    username: str | None = None
    password: Secret | None = None


def _credentials(env: Mapping[str, str], *, password_grant: bool) -> _Credentials:
    missing = [name for name in (ENV_CLIENT_ID, ENV_CLIENT_SECRET) if not env.get(name)]
    if len(missing) == 1:
        msg = f"environment variable {missing[0]} is not set"
        raise UsageError(msg)
    if missing:
        msg = f"environment variables {' and '.join(missing)} are not set"
        raise UsageError(msg)
    username, password = env.get(ENV_USERNAME) or None, env.get(ENV_PASSWORD) or None
    if not password_grant:
        username = password = None
    elif (username is None) != (password is None):
        absent, present = (
            (ENV_PASSWORD, ENV_USERNAME) if password is None else (ENV_USERNAME, ENV_PASSWORD)
        )
        msg = (
            f"environment variable {absent} is not set (the password grant needs it with {present})"
        )
        raise UsageError(msg)
    return _Credentials(
        client_id=env[ENV_CLIENT_ID],
        client_secret=Secret(env[ENV_CLIENT_SECRET]),
        username=username,
        password=None if password is None else Secret(password),
    )


def build_profile(args: argparse.Namespace, env: Mapping[str, str]) -> Provider:
    """The provider profile that ``aiopay-auth token`` asks, from its options.

    Args:
        args: The parsed ``token`` options.
        env: The environment, where the credentials are.

    Returns:
        The profile.

    Raises:
        UsageError: An option that does not apply to the provider, a
            missing option or variable, or a profile that cannot work.
    """
    kind: str = args.provider
    for option, owner in _ONLY_FOR.items():
        if getattr(args, option) is not None and owner != kind:
            msg = f"--{option.replace('_', '-')} applies only to {owner}"
            raise UsageError(msg)
    if kind in _REQUIRED:
        option, wanted = _REQUIRED[kind]
        if getattr(args, option) is None:
            msg = f"{kind} needs {wanted}"
            raise UsageError(msg)
    creds = _credentials(env, password_grant=kind in _PASSWORD_GRANT)
    client: dict[str, Any] = {"client_id": creds.client_id, "client_secret": creds.client_secret}
    user: dict[str, Any] = {"username": creds.username, "password": creds.password}
    try:
        if kind == "cm":
            profile = cm.provider(**client)
        elif kind == "vonage":
            profile = vonage.provider(region=args.region, **client, **user)
        elif kind == "payme":
            profile = payme.provider(
                environment=args.environment, audience=args.audience, **client, **user
            )
        elif kind == "oro":
            profile = oro.provider(
                app_url=args.app_url, application=args.application or "backoffice", **client
            )
        else:
            token_url = URL(args.token_url)
            api = args.api or (token_url.origin() if token_url.absolute else token_url)
            profile = generic.provider(
                name="generic", token_url=token_url, api=api, **client, **user
            )
        overrides = {
            field: value
            for field, value in (
                ("token_url", args.token_url),
                ("api", args.api),
                ("scope", args.scope),
                ("client_auth", args.client_auth),
            )
            if value is not None
        }
        return attrs.evolve(profile, **overrides) if overrides else profile
    except ConfigError as err:
        raise UsageError(str(err)) from None
    except ValueError as err:  # yarl's verdict on a URL that is not one
        msg = f"bad URL: {err}"
        raise UsageError(msg) from None


async def fetch_token(profile: Provider, timeout: float) -> Token:
    """Fetch one token for *profile* through a :class:`~aiopay_auth.TokenManager`.

    Retryable failures (a refused connection, a 5xx) are retried until
    *timeout*; a refusal that cannot heal (``invalid_client``) fails at once.

    Args:
        profile: The provider.
        timeout: Most seconds to wait, and the bound on each token request.

    Returns:
        The token.

    Raises:
        TokenUnavailableError: No token within *timeout*, or the provider
            refused; the provider's error is ``last_error``.
    """
    policy = RefreshPolicy(fetch_timeout=timeout, wait_timeout=timeout)
    async with TokenManager(policy=policy, token_pool_size=1) as tokens:
        holder = tokens.add(profile)
        return await holder.get(timeout)


def format_token(provider: str, token: Token, *, show_token: bool = False) -> str:
    """Describe a token for the terminal, without the token unless *show_token*.

    Args:
        provider: The provider's name.
        token: The token.
        show_token: Also print the access token itself.

    Returns:
        ``name  value`` lines, without a trailing newline.
    """
    rows: list[tuple[str, str]] = [
        ("provider", provider),
        ("token type", token.token_type),
        ("lifetime", f"{token.lifetime:g} s"),
        ("fingerprint", token.fingerprint),
    ]
    if token.scope:
        rows.append(("scope", token.scope))
    if token.refresh_token is not None:
        rows.append(("refresh token", f"issued (fingerprint {token.refresh_token.fingerprint})"))
    if show_token:
        rows.append(("access token", token.access_token))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def _run_token(args: argparse.Namespace) -> int:
    try:
        profile = build_profile(args, os.environ)
    except UsageError as err:
        _error("token", str(err))
        return EXIT_USAGE
    try:
        token = asyncio.run(fetch_token(profile, args.timeout))
    except TokenUnavailableError as err:
        _error("token", str(err.last_error or err))
        return EXIT_FAILED
    except (AuthError, ConfigError) as err:  # pragma: no cover - fetch_token raises only the above
        _error("token", str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _error("token", "interrupted")
        return EXIT_INTERRUPTED
    print(format_token(profile.name, token, show_token=args.show_token))
    return EXIT_OK
