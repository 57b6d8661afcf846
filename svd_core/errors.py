"""Expected errors. Each message is one line that says what is wrong and what to do; the CLI and the app print
`str(error)` and never a traceback for these."""


class SVDError(Exception):
    """Base of every expected error."""


class CheckpointError(SVDError):
    """The checkpoint file or folder cannot be loaded as Stable Video Diffusion."""


class ImageError(SVDError):
    """The conditioning image cannot be used."""


class Cancelled(SVDError):
    """A run was cancelled by its caller; nothing was written."""


class OutOfMemory(SVDError):
    """The run did not fit in memory, even after the fallback."""


class DownloadError(SVDError):
    """A release could not be downloaded from the Hugging Face Hub (access, token, network, disk, checksum)."""
