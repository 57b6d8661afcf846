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


class RecordError(SVDError, ValueError):
    """A run record (run.json, or the one inside an mp4) is not one SVD Studio wrote."""


class NotFinite(SVDError):
    """A run's latents or frames hold NaN or infinity (a checkpoint with such weights, or float16 overflow):
    the black or broken video is not saved."""


class DownloadError(SVDError):
    """A release could not be downloaded from the Hugging Face Hub (access, token, network, disk, checksum)."""


class SweepFailed(SVDError):
    """Cells of a sweep failed; the rest ran. `failures`: a CellFailure each; `run_paths`: the finished cells,
    saved as ordinary runs (no sweep folder: the sweep is incomplete)."""

    def __init__(self, message: str, failures=(), run_paths=()):
        super().__init__(message)
        self.failures = list(failures)
        self.run_paths = tuple(run_paths)


class ProcessLost(SVDError):
    """A process of a multi-process sweep died or stopped answering; nothing was saved."""
