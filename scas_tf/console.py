"""A quiet console for the command line: progress and results, not TensorFlow's internals.

TensorFlow's C++ side writes start-up lines (CUDA probing, absl's "before InitializeLog"
notice) straight to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says, and its Python side
logs SavedModel tracing and per-save INFO lines. By default both are kept off the terminal:
descriptor 2 goes to a temporary file (shown if the command fails unexpectedly) while Python's
sys.stderr keeps the terminal, and TensorFlow's Python loggers show errors only.
`--verbosity=1` (absl's flag) brings all of it back, with the per-chunk training lines.
"""
import io
import logging
import os
import sys
import tempfile

# Python loggers TensorFlow and Keras write through (SavedModel, checkpoint, tracing warnings).
LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py")
# The ones quieted by their level too (TensorFlow's may have a handler of its own, which the
# root handlers' filter does not see). Not absl's: raising it hid the scas logger's lines as well.
OWN_HANDLER_LOGGERS = ("tensorflow", "h5py")


def verbose_requested(argv):
    """Whether argv asks for --verbosity (or -v) of 1 or more; read before absl parses flags,
    since the redirection must happen before TensorFlow is imported."""
    for i, arg in enumerate(argv):
        for prefix in ("--verbosity", "-v"):
            if arg == prefix and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(prefix + "="):
                value = arg[len(prefix) + 1:]
            else:
                continue
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def capture_native_stderr():
    """Points descriptor 2 at a temporary file and sys.stderr (and the logging handlers that
    held the old one) at a copy of the terminal's descriptor; returns the file."""
    captured = tempfile.TemporaryFile()
    terminal = io.TextIOWrapper(os.fdopen(os.dup(2), "wb", buffering=0), write_through=True,
                                encoding=sys.stderr.encoding, errors="backslashreplace")
    sys.stderr.flush()
    old = sys.stderr
    os.dup2(captured.fileno(), 2)
    sys.stderr = terminal
    for handler in logging.root.handlers + [getattr(h, "python_handler", None) for h in logging.root.handlers]:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(terminal)
    return captured


def replay(captured):
    """Writes what descriptor 2 received to the terminal (after an unexpected failure)."""
    captured.seek(0)
    text = captured.read().decode(errors="replace")
    if text:
        sys.stderr.write(text)


class LibraryNoise(logging.Filter):
    """Drops library records below ERROR. A filter on the handlers rather than the loggers'
    levels: TensorFlow's SavedModel code resets absl's logger level while it saves."""

    def filter(self, record):
        return record.levelno >= logging.ERROR or record.name.split(".")[0] not in LIBRARY_LOGGERS


def quiet_libraries(verbose):
    logging.getLogger("scas").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for name in OWN_HANDLER_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        for handler in logging.root.handlers:
            handler.addFilter(LibraryNoise())


def main():
    """The `scas` command (console script and `python -m scas_tf`)."""
    captured = None if verbose_requested(sys.argv[1:]) else capture_native_stderr()
    from scas_tf import cli  # imports TensorFlow: after the redirection
    try:
        cli.run()
    except SystemExit:
        raise
    except BaseException:
        if captured is not None:
            replay(captured)
        raise
