"""The one exception type that means "the user gave us something we cannot use".

The CLI turns a `UserError` into a single line on stderr and exit status 1 (click's own usage errors
exit with 2), never a traceback; any other exception is a bug in tfrobust and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: unknown names, bad shapes or dtypes, missing files, a busy run directory."""
