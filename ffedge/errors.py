"""User-facing errors: the CLIs print ``str(error)`` on one line and exit non-zero."""


class FFEdgeError(Exception):
    """A problem the user can fix (bad input, missing file, wrong checkpoint)."""

    exit_code = 2


class CheckpointError(FFEdgeError):
    """A checkpoint that is missing, unreadable, or of another architecture."""


class MissingDependencyError(FFEdgeError):
    """An optional runtime package is not installed; the message names the extra."""

    exit_code = 3


def require(module: str, extra: str):
    """Import an optional dependency lazily, or fail with the pip extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised when the extra is absent
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'featherface-edge[{extra}]' ({exc})"
        ) from None
