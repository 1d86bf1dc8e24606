"""What a failure may say where others can read it: Prefect's task and flow states, its logs
and its result storage (with `deidflow serve`, a shared server).

deidflow's own errors (`DeidflowError`) name table, column, row and the kind of problem, never a
data value, and pass through unchanged. Any other exception — a library's, whose message may
quote a cell (pandas and pyarrow conversion errors do) — is replaced, before Prefect sees it, by
`RedactedError` carrying only its type and where it was raised; a storage error (full disk,
read-only directory) keeps its errno and path, which the CLI reports as the operator's to fix.
Prefect logs a failed run's traceback at ERROR on the console and in its database: for a
deidflow error (a user's bad input, already explained) the traceback is dropped, so the
operator sees the error once, as deidflow prints it.

A database URL (the consent registry's) is only ever shown, logged or recorded through
`redact_url`, which hides its password.
"""

from __future__ import annotations

import errno
import functools
import logging
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

from deidflow.errors import DeidflowError

F = TypeVar("F", bound=Callable[..., Any])


def redact_url(url: str) -> str:
    """A database URL with its password replaced by '***', for messages, logs and manifests
    (never store credentials). A URL that cannot be parsed is not shown at all: it could hold
    a password where no pattern would find it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


class RedactedError(RuntimeError):
    """An unexpected exception with its message withheld (it may quote data values)."""


def redact(exc: BaseException) -> BaseException:
    """`exc` if it is safe to store, else a stand-in that names only its type and place."""
    if isinstance(exc, (DeidflowError, KeyboardInterrupt, SystemExit, RedactedError)):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        # errno and the path written are what the operator needs; strerror is the OS's text
        return OSError(exc.errno, exc.strerror, exc.filename)  # the errno's own subclass
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
    return RedactedError(
        f"{type(exc).__name__} at {where} (message withheld: it may quote data values; "
        "rerun with -v on the hospital's own terminal to see it)"
    )


def no_values_in_failures(fn: F) -> F:
    """Wrap a task or flow body so that what escapes it is `redact`ed, with no chained cause
    (Prefect stores the exception it sees; a `__cause__` or `__context__` would carry the
    original along)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised, redacted
            safe = redact(exc)
            if safe is exc:
                raise
            raise safe from None

    return wrapper  # type: ignore[return-value]


class _NoTracebackForUserErrors(logging.Filter):
    """Drop the traceback Prefect attaches to a failed run's log record when the failure is
    deidflow's own error or the filesystem's (full, read-only, not writable): the message says
    what and where, the CLI says how to fix it, and a traceback would only bury that."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DeidflowError) or (isinstance(exc, OSError) and exc.errno in _STORAGE):
            record.exc_info = None
            record.exc_text = None
        return True


_STORAGE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_FILTER = _NoTracebackForUserErrors()


def quiet_prefect_failures() -> None:
    """Install the filter on Prefect's run loggers (idempotent)."""
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def safe_task(task_decorator: Callable[..., Any]) -> Callable[..., Any]:
    """`prefect.task` whose decorated functions are wrapped by `no_values_in_failures`:
    `task = safe_task(prefect.task)` makes every `@task(...)` of a flow module safe."""

    @functools.wraps(task_decorator)
    def make(*args: Any, **kwargs: Any) -> Any:
        if args and callable(args[0]) and not kwargs:  # bare @task
            return task_decorator(no_values_in_failures(args[0]))
        inner = task_decorator(*args, **kwargs)
        return lambda fn: inner(no_values_in_failures(fn))

    quiet_prefect_failures()
    return make
