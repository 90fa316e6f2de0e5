"""What every console script shares: a user error is one line on stderr.

dscfg, dscluster and dsclient all run their typer app through `run_app`: a
mistake by the user (a UserError, or any error of the project's tree, also
when trio wraps it in a one-member exception group) prints
``PROG: error: MESSAGE`` on one line of at most MAX_LINE characters and
exits 1; a usage error (unknown option, bad option value) is one line too and
exits 2; Ctrl-C prints ``PROG: interrupted`` and exits 130; anything else is a bug and keeps its traceback.
The whole error, with its traceback, is logged at DEBUG (``--log-level
debug``). `version_callback` gives each command the same ``--version``.

Nothing here imports trio or libp2p: ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable

import typer

from dscluster.errors import DSClusterError

USER_ERRORS: tuple[type[BaseException], ...]
MAX_LINE = 199  # characters of an error line, prefix included (under 200)
DISTRIBUTION = "ds-cluster"
LOG_LEVELS = ("debug", "info", "warning", "error")
INTERRUPTED = 130  # the exit status after Ctrl-C (128 + SIGINT)

log = logging.getLogger("dscluster.cli")


class UserError(Exception):
    """A mistake on the command line: one line on stderr, exit status 1."""


USER_ERRORS = (UserError, DSClusterError)


def version() -> str:
    """The installed distribution's version (the package's own when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        from dscluster import __version__

        return __version__


def version_callback(prog: str) -> Callable[[bool], None]:
    """The callback of an eager ``--version`` option: print ``PROG VERSION`` and exit 0."""
    def show(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {version()}")
            raise typer.Exit()

    return show


VERSION_HELP = "Print the version and exit."


def log_level_of(name: str) -> int:
    """A --log-level value as a logging level; typer.BadParameter (usage, exit 2) if unknown."""
    if name.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{name!r}: use one of {', '.join(LOG_LEVELS)}",
                                 param_hint="'--log-level'")
    level: int = getattr(logging, name.upper())
    return level


def user_error(
    exc: BaseException, kinds: tuple[type[BaseException], ...] = USER_ERRORS
) -> BaseException | None:
    """The user-facing error inside an exception (group), if that is all it holds."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, kinds) else None


def one_line(err: BaseException) -> str:
    """The error's message on one line (an OSError names its file)."""
    if isinstance(err, OSError) and err.filename:
        message = f"{err.filename}: {err.strerror}"
    else:
        message = str(err)
    return " ".join(message.split())


def plain(err: BaseException) -> str:
    """The error's line, with py-libp2p's long dial failure said in a few words."""
    text = one_line(err)
    dial = re.match(r"(.*?cannot connect to (\S+)): unable to connect to \S+, no addresses "
                    r"established a successful connection", text)
    if dial is not None:
        return (f"{dial[1]}: no address of it answered: is it running? "
                "(--log-level debug shows each attempt)")
    return text


def shorten(text: str, room: int) -> str:
    """At most ``room`` characters: a long message is cut at a word, pointing to the log."""
    if len(text) <= room:
        return text
    tail = " ... (--log-level debug shows all)"
    cut = text[:max(room - len(tail), 20)].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return cut + tail


def error_line(prog: str, message: str) -> str:
    """``PROG: error: MESSAGE`` on one line of at most MAX_LINE characters."""
    head = f"{prog.split()[0]}: error: "
    return head + shorten(" ".join(message.split()), MAX_LINE - len(head))


def usage_line(prog: str, message: str, usage: str, where: str) -> str:
    """A usage error on one line: what is wrong, the usage if it fits, where help is."""
    head = f"{prog.split()[0]}: error: "
    tail = f" (see {where} --help)"
    text = " ".join(message.split()).rstrip(".") + "."
    if len(head) + len(text) + 1 + len(usage) + len(tail) <= MAX_LINE:
        return f"{head}{text} {usage}{tail}"
    return head + shorten(text, MAX_LINE - len(head) - len(tail)) + tail


def run_app(
    app: typer.Typer,
    prog: str,
    argv: list[str] | None,
    user_errors: tuple[type[BaseException], ...] = USER_ERRORS,
    explain: Callable[[BaseException], str | None] | None = None,
) -> int:
    """Run a typer app as a console script and return its exit status.

    ``explain`` may turn a user error into a shorter message that says what to do
    (None: the error's own message)."""
    from typer.main import get_command

    command = get_command(app)
    try:
        code = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        code = INTERRUPTED
    except typer.Abort:
        print(f"{prog.split()[0]}: aborted", file=sys.stderr)
        return 1
    except typer.TyperException as exc:  # click's usage errors: one line, exit 2
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        usage = " ".join(ctx.get_usage().split()) if ctx is not None else ""
        where = ctx.command_path if ctx is not None else prog
        print(usage_line(prog, message, usage, where), file=sys.stderr)
        code = getattr(exc, "exit_code", 2)
        return code if isinstance(code, int) else 2
    except BaseException as exc:
        if user_error(exc, (KeyboardInterrupt,)) is not None:
            code = INTERRUPTED
            print(f"{prog.split()[0]}: interrupted", file=sys.stderr)
            return code
        err = user_error(exc, user_errors)
        if err is None:
            raise
        if isinstance(err, BrokenPipeError):
            return 1  # the reader went away (dsclient cat | head)
        log.debug("%s failed", prog, exc_info=exc)
        message = (explain(err) if explain else None) or plain(err)
        print(error_line(prog, message), file=sys.stderr)
        return 1
    if code == INTERRUPTED:  # Ctrl-C (click turns it into this status)
        print(f"{prog.split()[0]}: interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0
