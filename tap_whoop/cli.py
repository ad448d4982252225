"""The `tap-whoop` command: the Singer tap, plus `auth` and `revoke` for members' consent.

A click group: without a subcommand it is the SDK's tap command (its options, `--test`,
`--about`, `--discover` unchanged); `auth` and `revoke` take `--config` before them (Meltano
runs `tap-whoop --config F … auth`) or after. Every failure a user can act on is rendered
here, once: one line on stderr, the fix as a command to paste, a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import typing as t
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import click
import requests
from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError

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
from tap_whoop.errors import ConfigError, Invocation, TapWhoopError
from tap_whoop.oauth.app import new_state
from tap_whoop.proxies import via_proxy
from tap_whoop.run import Run
from tap_whoop.settings import (
    CONFIG_SCHEMA,
    DEFAULT_MEMBER,
    DEFAULT_STORE_TIMEOUT_SECONDS,
    configured_members,
    store_url_problem,
    too_deep,
    unknown_settings,
    validated,
)
from tap_whoop.stores.backends import PostgresStores
from tap_whoop.tap import CONFIG_FILES, TapWhoop


class TapCommand(click.Group):
    """The tap's options and callback (the SDK's), with `auth` and `revoke` beside them."""

    def invoke(self, ctx: click.Context) -> t.Any:
        """Log warnings as the SDK's own command does."""
        logging.captureWarnings(capture=True)
        return super().invoke(ctx)


def build_command() -> click.Group:
    """The SDK's tap command as a group, so subcommands can follow the tap's `--config`."""
    singer = TapWhoop.cli

    @click.pass_context
    def run_tap(ctx: click.Context, **params: t.Any) -> None:
        if ctx.invoked_subcommand is None:
            TapWhoop.invoke(**params)

    group = TapCommand(
        name="tap-whoop",
        params=list(singer.params),
        callback=run_tap,
        invoke_without_command=True,
        context_settings={"help_option_names": ["--help"]},
        help=(
            "Execute the Singer tap. Members consent with `tap-whoop auth` and are removed with "
            "`tap-whoop revoke` (see their --help). --test checks every member's credentials: "
            "it refreshes each token and asks each selected stream for a record."
        ),
    )
    group.add_command(auth)
    group.add_command(revoke)
    group.add_command(webhooks)
    group.add_command(set_aside)
    group.add_command(store)
    group.add_command(plan)
    return group


def main(argv: list[str] | None = None) -> None:
    """Run the tap or a subcommand; user mistakes and WHOOP refusals end in one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Some singer-sdk releases warn on every start about their own plans for Python versions.
    warnings.filterwarnings("ignore", message=r"Python \S+ will reach its end of life")
    command = build_command()
    ctx: click.Context | None = None
    code: t.Any = 0
    try:
        ctx = command.make_context("tap-whoop", args)
        with ctx:
            code = command.invoke(ctx)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except BrokenPipeError:
        _stop_writing()
        _fail(
            "the target stopped reading (broken pipe); the last STATE message it received is "
            "safe to resume from: check the target's own error",
            1,
        )
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        _fail("cancelled", 130)
    except ConfigValidationError as exc:
        _fail(exc.errors[0] if exc.errors else str(exc), ConfigError.exit_code)
    except TapWhoopError as exc:
        files = ctx.meta.get(CONFIG_FILES, ()) if ctx is not None else ()
        _fail(exc.render(Invocation.current(files)), exc.exit_code)
    except FatalAPIError as exc:
        _fail(f"WHOOP refused a request: {exc}", 1)
    except RetriableAPIError as exc:
        _fail(f"WHOOP kept failing, gave up after retries: {exc}", 1)
    except requests.exceptions.RequestException as exc:
        request = getattr(exc, "request", None)
        url = str(request.url) if request is not None and request.url else ""
        host = urlsplit(url).netloc
        where = f" at {host}" if host else ""
        if via := via_proxy(exc, url):
            bypass = f"list {urlsplit(url).hostname} in NO_PROXY" if host else "unset it"
            _fail(
                f"cannot reach WHOOP{where}{via} ({type(exc).__name__}): check that proxy "
                f"setting, or {bypass} to reach WHOOP directly",
                1,
            )
        _fail(
            f"cannot reach WHOOP{where} ({type(exc).__name__}), gave up after retries: check "
            "api_url (and oauth_url) and the network",
            1,
        )
    sys.exit(code if isinstance(code, int) else 0)


def _stop_writing() -> None:
    """Point stdout at /dev/null, so Python's flush at exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _fail(message: str, code: int) -> t.NoReturn:
    print(f"tap-whoop: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


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


def _run(ctx: click.Context, configs: tuple[str, ...]) -> Run:
    """The run's services as `--config` describes them (the tap's, then the subcommand's)."""
    _log_warnings_only()
    files = (*(ctx.parent.meta.get(CONFIG_FILES, ()) if ctx.parent else ()), *configs)
    if not files:
        option = next(param for param in ctx.command.params if param.name == "configs")
        raise click.MissingParameter(ctx=ctx, param=option)
    ctx.meta[CONFIG_FILES] = files
    config: dict[str, t.Any] = {}
    for value in files:
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
    if "ENV" in files:
        config |= parse_environment_config(CONFIG_SCHEMA, "TAP_WHOOP_")
    for warning in unknown_settings(config, TapWhoop.settings_schema()["properties"]):
        logging.getLogger("tap-whoop").warning("%s", warning)
    return Run(validated(config), Invocation.current(files))


def _member_key(run: Run, member: str | None) -> str:
    keys = [key for key, _ in configured_members(run.config)]
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
@click.pass_context
def auth(
    ctx: click.Context,
    configs: tuple[str, ...],
    member: str | None,
    redirect_uri: str | None,
    no_browser: bool,
    listen: int | None,
    print_refresh_token: bool,
) -> None:
    """Authorize a WHOOP member and store their tokens (once per member)."""
    run = _run(ctx, configs)
    key = _member_key(run, member)
    app = run.app
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
    consent = complete_consent(run, key, code, redirect_uri)
    for warning in consent.warnings:
        click.echo(f"tap-whoop: warning: {warning}", err=True)
    who = f"WHOOP user {consent.user_id}" + (f" ({consent.name})" if consent.name else "")
    click.echo(f"Member {key!r} authorized: {who}; tokens saved to {run.token_store.path}")
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
@click.option(
    "--also-disconnect-shared",
    is_flag=True,
    help="Revoke even when other keys are the same WHOOP user (WHOOP revokes per user).",
)
@click.pass_context
def revoke(
    ctx: click.Context,
    configs: tuple[str, ...],
    member: str,
    local_only: bool,
    also_disconnect_shared: bool,
) -> None:
    """Revoke a member's authorization at WHOOP and remove them from the token store."""
    run = _run(ctx, configs)
    key = _member_key(run, member)
    click.echo(
        revoke_member(run, key, local_only=local_only, also_disconnect=also_disconnect_shared)
    )


@click.command(context_settings={"help_option_names": ["--help"]})
@_CONFIG_OPTION
@click.option(
    "--host",
    metavar="HOST",
    help="Address to listen on (default: the webhook_host setting, 127.0.0.1): keep 127.0.0.1 "
    "behind an https reverse proxy on this machine, 0.0.0.0 in a container.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Port to listen on (default: the webhook_port setting, 8787); 0 picks a free port.",
)
@click.pass_context
def webhooks(
    ctx: click.Context, configs: tuple[str, ...], host: str | None, port: int | None
) -> None:
    """Receive WHOOP's webhooks at /webhooks/whoop until SIGTERM or Ctrl-C.

    Each signed event of a member in the token store is kept in the inbox beside it; the tap
    reads the records they name on its next run. See docs/webhooks.md. Stopped by a signal, it
    exits 128 + its number (143, 130), as the tap does.
    """
    from tap_whoop.webhooks.receiver import serve  # its server and HTTP parsing load for it alone

    run = _run(ctx, configs)
    _log_service()
    signum = serve(run, host=host, port=port)
    if signum is not None:
        ctx.exit(128 + signum)


@click.command("set-aside", context_settings={"help_option_names": ["--help"]})
@_CONFIG_OPTION
@click.option(
    "--retry",
    "retry",
    type=int,
    multiple=True,
    metavar="SEQ",
    help="Put the event back in the log, as a new delivery every pipeline's next run reads.",
)
@click.option("--drop", "drop", type=int, multiple=True, metavar="SEQ", help="Forget the event.")
@click.pass_context
def set_aside(
    ctx: click.Context, configs: tuple[str, ...], retry: tuple[int, ...], drop: tuple[int, ...]
) -> None:
    """List the webhook events runs gave up on after their tries, or retry or drop them.

    An event is set aside when its record could not be passed on in several runs (a 4xx, an
    endpoint that kept failing, an update WHOOP answers 404 for, a member no longer in `users`);
    the member's collections are read in full meanwhile, so a set-aside event is seldom data lost.
    """
    run = _run(ctx, configs)
    inbox = run.inbox
    for seq, again in [*((seq, True) for seq in retry), *((seq, False) for seq in drop)]:
        released = inbox.release(seq, retry=again)
        if released is None:
            raise ConfigError(f"no event {seq} is set aside: list them with `tap-whoop set-aside`")
        what = f"{released.type} {released.record_id} of user {released.user_id}"
        click.echo(
            f"event {seq} ({what}) is back in the log as event {released.seq}"
            if again
            else f"event {seq} ({what}) dropped"
        )
    if retry or drop:
        return
    events = inbox.set_aside_events()
    if not events:
        click.echo("no event is set aside")
        return
    click.echo(f"{'seq':>8}  {'user id':>10}  {'type':<16} {'record':<36}  tries  why")
    for entry in events:
        event = entry.event
        click.echo(
            f"{event.seq:>8}  {event.user_id:>10}  {event.type:<16} {event.record_id:<36}  "
            f"{entry.tries:>5}  {' '.join(entry.reason.split())}"  # one row, whatever WHOOP said
        )
    click.echo("retry with `tap-whoop set-aside --retry SEQ`, or forget with --drop SEQ")


def _log_service() -> None:
    """A service: what it stores and refuses (INFO), and waitress's own warnings, one line each."""
    logger = logging.getLogger("tap-whoop")
    logger.setLevel(logging.INFO)
    server_logger = logging.getLogger("waitress")
    server_logger.handlers = list(logger.handlers)
    server_logger.setLevel(logging.WARNING)
    server_logger.propagate = False


@click.group(context_settings={"help_option_names": ["--help"]})
def store() -> None:
    """Where the token store, the webhook inbox and the rate-limit window live (see `copy`)."""


@store.command("copy", context_settings={"help_option_names": ["--help"]})
@_CONFIG_OPTION
@click.option(
    "--to",
    "target",
    metavar="URL",
    help="The PostgreSQL database, postgresql://USER:PASSWORD@HOST:PORT/DATABASE (default: the "
    "store_url setting, which keeps the password off the command line).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a member the database holds with an unrelated token (neither rotated from "
    "the other) by the file's; without it such a copy is refused and nothing is copied.",
)
@click.pass_context
def copy_store(
    ctx: click.Context, configs: tuple[str, ...], target: str | None, overwrite: bool
) -> None:
    """Copy the token store and webhook inbox files into PostgreSQL, spending no token.

    Every member's tokens (as they are: nothing is refreshed), the inbox's events and the
    ledger of emitted records go to the database; the files are then marked as moved, so a run
    still configured without store_url stops instead of spending tokens the database holds. A
    member the database already has is decided by token lineage, never by clocks: the same
    token is left; a token rotated from the other one is newer and wins; unrelated tokens are
    refused (see --overwrite). Stop the tap's schedules and `tap-whoop webhooks` first, then set
    store_url everywhere.
    """
    from tap_whoop.stores.postgres import Database, copy_file_store
    from tap_whoop.stores.sql_inbox import SqliteInbox

    run = _run(ctx, configs)
    url = target or run.settings.store_url
    if not url:
        raise ConfigError(
            "say where to copy to: --to postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or set "
            "store_url"
        )
    if problem := store_url_problem(str(url)):
        raise ConfigError(f"--to {problem}" if target else f"store_url {problem}")
    files = run.file_stores
    source = files.token_store
    if not source.target.exists():
        raise ConfigError(
            f"no token store at {source.path}, so nothing to copy: check token_store_path (under "
            "Meltano, run `meltano invoke tap-whoop store copy`, which passes the project's)"
        )
    inbox_path = files.inbox_path
    inbox = SqliteInbox(inbox_path) if inbox_path.exists() else None
    stores = run.stores
    if isinstance(stores, PostgresStores) and url == stores.database.url:
        database = stores.database
    else:
        database = Database(str(url), timeout=DEFAULT_STORE_TIMEOUT_SECONDS)
    report = copy_file_store(source, inbox, database, overwrite=overwrite)
    click.echo(
        f"Copied the token store {source.path} to {database.where} without spending any token:"
    )
    for line in report.lines() or ["  (no members)"]:
        click.echo(line)
    if inbox is not None:
        click.echo(
            f"Webhook inbox {inbox_path}: {report.events} event(s) and {report.ledger_rows} "
            "ledger row(s) copied."
        )
    click.echo(
        f"{source.path} is now marked as moved: set store_url everywhere this app runs (the tap "
        "and `tap-whoop webhooks`); a run without it refuses the file."
    )


@click.command(context_settings={"help_option_names": ["--help"]})
@_CONFIG_OPTION
@click.option(
    "--state",
    "state_file",
    type=click.File("r", encoding="utf-8"),
    metavar="FILE",
    help="The Singer state of the next run (under Meltano: `meltano state get STATE_ID`); "
    "without it every member is costed as new.",
)
@click.option(
    "--catalog",
    "catalog_file",
    type=click.File("r", encoding="utf-8"),
    metavar="FILE",
    help="The catalog the runs use (default: the streams selected by default).",
)
@click.option(
    "--runs-per-day",
    type=click.IntRange(1, 1440),
    default=24,
    show_default=True,
    help="How often the schedule runs the tap.",
)
@click.option(
    "--daily-limit",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="The app's daily request quota (WHOOP's default is 10,000).",
)
@click.pass_context
def plan(
    ctx: click.Context,
    configs: tuple[str, ...],
    state_file: t.IO[str] | None,
    catalog_file: t.IO[str] | None,
    runs_per_day: int,
    daily_limit: int,
) -> None:
    """Print what the next run and a day of runs will cost, per member and in total.

    Against the app's daily quota, and how many days the histories still to read will take.
    Nothing is requested from WHOOP and no token is spent.
    """
    from tap_whoop.plan import report
    from tap_whoop.tap import read_json_file

    run = _run(ctx, configs)
    # `meltano invoke tap-whoop plan` gives --catalog and --state to the tap, before `plan`
    parent = ctx.parent.params if ctx.parent else {}
    tap = TapWhoop(
        config=dict(run.config),
        state=read_json_file(state_file or parent.get("state"), "state"),
        catalog=read_json_file(catalog_file or parent.get("catalog"), "catalog"),
    )
    tap.run.invocation = run.invocation
    for line in report(tap, runs_per_day, daily_limit):
        click.echo(line)
