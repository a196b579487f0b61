"""Exception classes: every error ``bilm`` raises on bad input is one of these.

Each subclasses :class:`BilmError` and, where it fits, ``ValueError`` or ``OSError``,
so ``except ValueError`` in existing code keeps working. Messages are one line and
name the file, line or key, what was found and what was expected.
"""


class BilmError(Exception):
    """Base class of all errors raised by ``bilm`` for bad input."""


class OptionsError(BilmError, ValueError):
    """An options.json file or dict is missing a key or has an impossible value."""


class InvalidNumberOfCharacters(OptionsError):
    """``char_cnn.n_characters`` is 261 at inference or 262 in training."""


class WeightFileError(BilmError, ValueError):
    """A weight HDF5 file is missing, unreadable, or does not match the options."""


class VocabularyError(BilmError, ValueError):
    """A vocabulary file is missing, empty or malformed."""


class InputError(BilmError, ValueError):
    """Text or id input that the model cannot take (empty batch, too large, ...)."""


class OutputExistsError(BilmError, FileExistsError):
    """An output file exists and overwriting was not asked for."""


class OutputError(BilmError, OSError):
    """An output cannot be written (missing or unwritable directory, disk full, ...)."""
