"""Errors that are the user's to fix: entry points print them as a line or two (ecgjax.cli)."""


class UserError(ValueError):
    """A mistake in flags, paths, configs or data: the message names the thing, the problem and the fix."""
