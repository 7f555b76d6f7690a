"""User-facing errors.

Anything raised as :class:`EvalkitError` is a user mistake (bad path, bad flag, bad file):
the CLI prints its message as one line and exits non-zero without a traceback. Messages
should name the fix, e.g. ``"checkpoint not found: x.pt (check the --ckpt path)"``.
"""


class EvalkitError(Exception):
    """A problem the user can fix; printed as one line by the CLI."""


class CheckpointError(EvalkitError):
    """A checkpoint could not be read, or does not describe a model evalkit can build."""


class DataError(EvalkitError):
    """A dataset could not be found, read, or does not match the model."""
