"""What every ``sluice`` sub-command shares: exit codes, errors, options, the data-directory lock.

The exit codes are part of the CLI's contract (scripts branch on them) and are
printed by ``sluice --help``; :func:`exit_code` maps an error to its code.
"""

from __future__ import annotations

import argparse
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from common.core.errors import ConfigError, NotFound, SluiceError

if TYPE_CHECKING:
    from common.config import Settings

OK = 0
DOCUMENTS_FAILED = 1  # some documents (or attachments) failed; the outputs were still written
USAGE = 2  # a wrong option or argument, or an invalid configuration; nothing was done
FAILED = 3  # the run, an export or the chain failed as a whole
BUSY = 4  # another sluice process holds the data directory
INTERRUPTED = 130

EXIT_CODES = f"""exit status:
  {OK}    everything succeeded
  {DOCUMENTS_FAILED}    some documents failed (each is printed); the outputs were still written
  {USAGE}    usage or configuration error (bad option, missing file, unknown job, invalid SLUICE_*); nothing ran
  {FAILED}    the run or an export failed as a whole (the message says why)
  {BUSY}    another sluice process is using the data directory
  {INTERRUPTED}  interrupted (Ctrl-C); run the same command again to resume"""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class UsageError(SluiceError):
    """The command line asks for something that cannot be done as written."""

    code = "usage"
    hint = ""


class DataDirBusy(SluiceError):
    code = "data_dir_busy"
    hint = ""


def exit_code(err: BaseException) -> int:
    if isinstance(err, DataDirBusy):
        return BUSY
    if isinstance(err, UsageError | ConfigError | NotFound | ValueError):
        return USAGE
    return FAILED


def message(err: BaseException) -> str:
    """One line: the error and, in parentheses, what to do about it."""
    if isinstance(err, SluiceError):
        hint = f" ({err.hint})" if err.hint else ""
        return f"{err.message}{hint}"
    return " ".join(str(err).split())


def add_data_dir(p: argparse.ArgumentParser) -> None:
    default = Path(os.environ.get("SLUICE_DATA_DIR", ".sluice"))
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help=f"the embedded backend's records, messages and files (default: SLUICE_DATA_DIR or .sluice; now {default})",
    )


def add_log_level(p: argparse.ArgumentParser) -> None:
    default = os.environ.get("SLUICE_LOG_LEVEL", "WARNING").upper()
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default if default in LOG_LEVELS else "WARNING",
        help="log lines at this level and above on stderr (default: SLUICE_LOG_LEVEL or WARNING)",
    )


def add_common(p: argparse.ArgumentParser, *, quiet: bool = True) -> None:
    add_data_dir(p)
    add_log_level(p)
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress output on stderr (default: off)")


def load_settings(data_dir: Path) -> Settings:
    """The local backend's settings, every ``SLUICE_*`` variable checked now (one line if one is wrong)."""
    from pydantic import ValidationError

    from common.config import Settings

    try:
        return Settings(backend="local", data_dir=data_dir)
    except ValidationError as err:
        first = err.errors()[0]
        name = "SLUICE_" + "_".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(f"{name}: {first['msg']}", hint=f"Fix or unset {name}.") from None


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One embedded runtime per data directory: leases of a dead holder are safe to recover."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirBusy(
                f"another sluice process is using {data_dir}; wait for it, or pass another --data-dir"
            ) from None
        yield
