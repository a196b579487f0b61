"""Exception classes: every error ``bilm`` raises on bad input is one of these.

Each subclasses :class:`BilmError` and, where it fits, ``ValueError`` or ``OSError``,
so ``except ValueError`` in existing code keeps working. Messages are one line and
name the file, line or key, what was found and what was expected. A message that
suggests a setting names it as the caller knows it: a Python keyword argument, or a
flag of the ``bilm`` command (``flag``).
"""


class BilmError(Exception):
    """Base class of all errors raised by ``bilm`` for bad input."""


class OptionsError(BilmError, ValueError):
    """An options.json file or dict is missing a key or has an impossible value."""


class InvalidNumberOfCharacters(OptionsError):
    """``char_cnn.n_characters`` is 261 at inference or 262 in training."""


class WeightFileError(BilmError, ValueError):
    """A weight HDF5 file is missing, unreadable, or does not match the options."""


class CheckpointError(BilmError, ValueError):
    """A training checkpoint or save directory is missing, incomplete, or does not match the options."""


class VocabularyError(BilmError, ValueError):
    """A vocabulary file is missing, empty or malformed, or not the model's."""


class InputError(BilmError, ValueError):
    """Text, ids or arguments that the job cannot take (empty batch, bad setting, ...)."""


class TrainingError(BilmError, RuntimeError):
    """Training stopped: it diverged, or was interrupted (what was saved is named)."""


class WorkerLostError(TrainingError):
    """Another worker of a training cluster stopped responding."""


class OutputExistsError(BilmError, FileExistsError):
    """An output file exists and overwriting was not asked for."""


class OutputError(BilmError, OSError):
    """An output cannot be written (missing or unwritable directory, disk full, one of the inputs, ...)."""


class OutputLockedError(OutputError):
    """Another process is writing the same output."""


_COMMAND_LINE = {"on": False}


def speak_in_flags(on=True):
    """Make messages name command-line flags instead of keyword arguments (the ``bilm`` command)."""
    _COMMAND_LINE["on"] = on


def speaks_in_flags():
    """Whether messages name command-line flags (``speak_in_flags``), e.g. to pass on to a child process."""
    return _COMMAND_LINE["on"]


def flag(keyword, command_line):
    """``keyword`` (e.g. ``"overwrite=True"``) or, for the command line, its flag (``"--overwrite"``)."""
    return command_line if _COMMAND_LINE["on"] else f"{keyword} ({command_line})"


def tensorflow_reason(err):
    """The line of a TensorFlow error that says what went wrong (its messages span many lines)."""
    lines = [line.strip() for line in (getattr(err, "message", None) or str(err)).splitlines()]
    noise = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "Hint:", "Original stack trace")
    useful = [line for line in lines if line and not line.startswith(noise) and "most recent call last" not in line]
    reason = useful[0] if useful else (lines[0] if lines else type(err).__name__)
    return reason.rsplit("; ", 1)[-1]
