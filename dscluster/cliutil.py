"""What every console script shares: a user error is one line on stderr.

dscfg, dscluster and dsclient all run their typer app through `run_app`: a
mistake by the user (a UserError, or any error of the project's tree, also
when trio wraps it in a one-member exception group) prints
``PROG: error: MESSAGE`` and exits 1; usage errors keep typer's status 2;
Ctrl-C exits 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from dscluster.errors import DSClusterError

USER_ERRORS: tuple[type[BaseException], ...]


class UserError(Exception):
    """A mistake on the command line: one line on stderr, exit status 1."""


USER_ERRORS = (UserError, DSClusterError)


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


def run_app(
    app: typer.Typer,
    prog: str,
    argv: list[str] | None,
    user_errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """Run a typer app as a console script and return its exit status."""
    try:
        app(args=argv, prog_name=prog)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        err = user_error(exc, user_errors)
        if err is None:
            raise
        if isinstance(err, BrokenPipeError):
            return 1  # the reader went away (dsclient cat | head)
        print(f"{prog.split()[0]}: error: {one_line(err)}", file=sys.stderr)
        return 1
    return 0
