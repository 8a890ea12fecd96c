"""The two ways a checkpoint can fail to load, each with a one-line message naming the file."""

__all__ = ['CheckpointLoadError', 'CheckpointMismatchError', 'CheckpointNotFoundError']


class CheckpointLoadError(ValueError):
    """A checkpoint file cannot be read safely; the message is one line naming the file."""


class CheckpointNotFoundError(CheckpointLoadError, FileNotFoundError):
    """The checkpoint file (or model-zoo name) does not exist."""


class CheckpointMismatchError(ValueError):
    """A checkpoint does not match the backbone it is loaded into."""
