"""The `tap-whoop` command: the Singer tap, plus `auth` and `revoke` for members' consent.

`tap-whoop auth|revoke …` runs the subcommand; anything else is the SDK's tap CLI (whose `--test`
is the credential check). Meltano runs a plugin's own arguments after its `--config`, `--catalog`
and `--state`, so `meltano invoke tap-whoop auth` arrives as `tap-whoop --config F … auth`.
Every failure a user can act on ends in one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import sys
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

import click
import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_whoop.auth import new_state
from tap_whoop.consent import (
    CALLBACK_PATH,
    DEFAULT_REDIRECT_URI,
    ConsentError,
    RedirectListener,
    code_from_redirect,
    complete_consent,
    open_browser,
    revoke_member,
)
from tap_whoop.errors import ConfigError, TapWhoopError, remember_config_args
from tap_whoop.tap import DEFAULT_MEMBER, TapWhoop, configured_members, too_deep

_VALUED_TAP_OPTIONS = ("--config", "--catalog", "--state")


def main(argv: list[str] | None = None) -> None:
    """Run the tap or a subcommand; user mistakes and WHOOP refusals end in one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    subcommand, configs, rest = _split(args)
    remember_config_args(_config_values(args))
    try:
        if subcommand is None:
            code = TapWhoop.cli.main(args=args, prog_name="tap-whoop", standalone_mode=False)
        else:
            _log_warnings_only()
            command = SUBCOMMANDS[subcommand]
            config_args = [arg for value in configs for arg in ("--config", value)]
            code = command.main(
                args=[*config_args, *rest],
                prog_name=f"tap-whoop {subcommand}",
                standalone_mode=False,
            )
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("cancelled", 130)
    except TapWhoopError as exc:
        _fail(str(exc), exc.exit_code)
    except FatalAPIError as exc:
        _fail(f"WHOOP refused a request: {exc}", 1)
    except RetriableAPIError as exc:
        _fail(f"WHOOP kept failing, gave up after retries: {exc}", 1)
    except requests.exceptions.RequestException as exc:
        _fail(f"cannot reach WHOOP ({type(exc).__name__}), gave up after retries", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _split(args: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(subcommand or None, the `--config` values, the subcommand's own arguments)."""
    index = 0
    while index < len(args) and args[index] not in SUBCOMMANDS:
        name, equals, _ = args[index].partition("=")
        if name not in _VALUED_TAP_OPTIONS:
            return None, _config_values(args), args
        index += 1 if equals else 2
    if index >= len(args):
        return None, _config_values(args), args
    return args[index], _config_values(args[:index]), args[index + 1 :]


def _config_values(args: list[str]) -> list[str]:
    values = []
    for index, arg in enumerate(args):
        if arg == "--config" and index + 1 < len(args):
            values.append(args[index + 1])
        elif arg.startswith("--config="):
            values.append(arg.partition("=")[2])
    return values


def _log_warnings_only() -> None:
    """An interactive command: warnings as single lines, none of the tap's INFO chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("tap-whoop")
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"tap-whoop: {record.levelname.lower()}: {' '.join(record.getMessage().split())}"


def _fail(message: str, code: int) -> t.NoReturn:
    print(f"tap-whoop: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def _load_tap(configs: tuple[str, ...]) -> TapWhoop:
    """The tap as `--config` describes it: files merged in order, ENV for TAP_WHOOP_* variables."""
    config: dict[str, t.Any] = {}
    for value in configs:
        if value == "ENV":
            continue
        try:
            loaded = json.loads(Path(value).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read --config {value}: {exc.strerror}") from None
        except RecursionError:
            raise ConfigError(too_deep(f"--config {value}", "a tap config")) from None
        except ValueError as exc:
            raise ConfigError(f"--config {value} is not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {value} is not a JSON object")
        config |= loaded
    return TapWhoop(config=config, parse_env_config="ENV" in configs)


def _member_key(tap: TapWhoop, member: str | None) -> str:
    keys = [key for key, _ in configured_members(tap.config)]
    if member is None:
        if DEFAULT_MEMBER not in keys:
            raise ConfigError(
                f"the config lists members {', '.join(keys)}: choose one with --member"
            )
        return DEFAULT_MEMBER
    if not member.strip() or member != member.strip():
        raise ConfigError("--member must be a non-empty key without surrounding spaces")
    return member


_CONFIG_OPTION = click.option(
    "--config",
    "configs",
    multiple=True,
    required=True,
    metavar="FILE",
    help=(
        "The tap's config: client_id, client_secret, oauth_url, api_url, token_store_path. "
        "Repeatable; ENV reads TAP_WHOOP_* variables."
    ),
)
_MEMBER_OPTION = click.option(
    "--member",
    metavar="KEY",
    help=f"The member's key: a `users` key, or {DEFAULT_MEMBER!r} (the default) for a config "
    "with a single refresh_token.",
)


@click.command(context_settings={"help_option_names": ["--help"]})
@_CONFIG_OPTION
@_MEMBER_OPTION
@click.option(
    "--redirect-uri",
    metavar="URI",
    help=(
        "Must be exactly a redirect URI registered on the WHOOP app (WHOOP requires https). "
        f"Default: {DEFAULT_REDIRECT_URI}; with --listen, http://127.0.0.1:PORT/whoop/callback."
    ),
)
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@click.option(
    "--listen",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help=(
        "Catch the redirect on 127.0.0.1:PORT (0: any free port) instead of reading the "
        "address on stdin; for a redirect URI served there (the sandbox, or an https proxy)."
    ),
)
@click.option(
    "--print-refresh-token",
    is_flag=True,
    help="Also print the new refresh token (the token store has it already).",
)
def auth(
    configs: tuple[str, ...],
    member: str | None,
    redirect_uri: str | None,
    no_browser: bool,
    listen: int | None,
    print_refresh_token: bool,
) -> None:
    """Authorize a WHOOP member and store their tokens (once per member)."""
    tap = _load_tap(configs)
    key = _member_key(tap, member)
    app = tap.app
    listener = None
    if listen is not None:
        listener = RedirectListener(
            listen, urlsplit(redirect_uri).path if redirect_uri else CALLBACK_PATH
        )
    try:
        redirect_uri = redirect_uri or (listener.redirect_uri if listener else DEFAULT_REDIRECT_URI)
        state = new_state()
        url = app.authorization_url(redirect_uri, state)
        click.echo(f"Authorize member {key!r}: sign in as that WHOOP member and allow access at")
        click.echo(f"  {url}")
        if not no_browser and open_browser(url):
            click.echo("(opened in your browser)")
        if listener is not None:
            click.echo(f"Waiting for WHOOP's redirect on 127.0.0.1:{listener.port} ...")
            received = listener.wait()
        else:
            click.echo(
                f"WHOOP then sends the browser to {redirect_uri}?code=... (the page may not load; "
                "that is expected). Paste that whole address here and press Enter:"
            )
            received = sys.stdin.readline()
            if not received:
                raise ConsentError("no address arrived on stdin; nothing was stored")
    finally:
        if listener is not None:
            listener.close()
    code = code_from_redirect(received, state, redirect_uri)
    consent = complete_consent(tap, key, code, redirect_uri)
    for warning in consent.warnings:
        click.echo(f"tap-whoop: warning: {warning}", err=True)
    who = f"WHOOP user {consent.user_id}" + (f" ({consent.name})" if consent.name else "")
    click.echo(f"Member {key!r} authorized: {who}; tokens saved to {tap.token_store.path}")
    if print_refresh_token:
        click.echo(f"refresh_token: {consent.refresh_token}")


@click.command(context_settings={"help_option_names": ["--help"]})
@_CONFIG_OPTION
@click.option("--member", metavar="KEY", required=True, help="The member's key.")
@click.option(
    "--local-only",
    is_flag=True,
    help="Only remove the member from the token store (when WHOOP no longer accepts its tokens).",
)
def revoke(configs: tuple[str, ...], member: str, local_only: bool) -> None:
    """Revoke a member's authorization at WHOOP and remove them from the token store."""
    tap = _load_tap(configs)
    click.echo(revoke_member(tap, _member_key(tap, member), local_only=local_only))


SUBCOMMANDS: dict[str, click.Command] = {"auth": auth, "revoke": revoke}
