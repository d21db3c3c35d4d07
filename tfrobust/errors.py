"""The exceptions that end a command with one line instead of a traceback.

`UserError` means "the user gave us something we cannot use", or an environment tfrobust cannot work in
(a full disk, a read-only directory: `WriteError`; a run whose numbers stopped being finite:
`NonFiniteError`). The CLI turns a `UserError` into a single line on stderr and exit status 1 (click's
own usage errors exit with 2), never a traceback; any other exception is a bug in tfrobust and keeps its
traceback. `Interrupted` is not an error: a run asked to stop (SIGTERM) saved its state and says how to
continue; the CLI prints its line and exits with `Interrupted.exit_code` (143, the shell's status of a
process ended by SIGTERM).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: unknown names, bad shapes or dtypes, missing files, a busy run directory."""


class WriteError(UserError, OSError):
    """A file tfrobust writes could not be written (no space left, over quota, a read-only or forbidden
    directory): one line naming the file and the operating system's reason. Also an `OSError`, so code
    that handles failed writes as `OSError` keeps doing so."""

    def __init__(self, what: str, path: str, reason: str, errno: int | None = None):
        super().__init__(f"cannot write {what + ' ' if what else ''}{path}: {reason}")
        self.what, self.path, self.reason = what, path, reason
        self.errno = errno  # the operating system's code (errno.ENOSPC, ...), None where it is not known

    def __str__(self) -> str:
        return str(self.args[0])


class NonFiniteError(UserError):
    """Training produced a NaN or infinite loss, gradient or weight: the run stops and writes nothing of
    that state (`tfrobust.training.faults`)."""


class Interrupted(Exception):
    """A command stopped on request (SIGTERM) after saving what it needs to continue; the message says how.
    Not a `UserError`: nothing is wrong with the input."""

    exit_code = 143  # 128 + SIGTERM (15), what a shell reports for a process ended by SIGTERM
