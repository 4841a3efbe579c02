"""A run is one folder: config, TensorBoard events, checkpoints, architecture, results, export.

Files are written atomically (temporary file, then rename) so that an interrupted run never
leaves a half-written result; checkpoints are TensorFlow's, whose writer also renames.
"""
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from scas_tf.errors import ScasError

log = logging.getLogger("scas")


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ScasError(f"corrupt run file: {path} ({e})") from None


class FolderInUse(ScasError):
    """Another process holds the folder."""


# Lock files this process holds, by folder: kept open (and so locked) until released.
_HELD = {}


@contextlib.contextmanager
def held(folder):
    """Holds `folder` (see `hold`) for the duration of a with-block."""
    already = str(Path(folder).resolve()) in _HELD
    hold(folder)
    try:
        yield
    finally:
        if not already:
            release(folder)


def hold(folder):
    """Makes this process the only one using `folder` until it releases it or exits.

    An exclusive flock on folder/.lock: the kernel drops it when the holder dies, however it
    dies, so a killed run leaves no stale lock to clean up (flock works across hosts on NFS).
    Holding a folder twice in one process is a no-op. Raises FolderInUse naming the holder."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        return
    if folder.exists() and not folder.is_dir():
        raise ScasError(f"output_dir is not a directory: {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FolderInUse(f"{folder} is in use by {holder}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _HELD[key] = fd


def release(folder):
    """Gives up a folder this process holds (closing the lock file drops the flock)."""
    fd = _HELD.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)


# Left by a run stopped by a non-finite loss or weight (see resumable.Resumable.guard).
DIVERGED_FILE = "diverged.json"

# Fields a rerun may change without changing the run's result: how often it logs and checkpoints,
# and which DARTS search cells recompute their activations in the backward pass (`kept_cells`,
# `alpha_kept_cells`, and `recompute`, the all-or-none field they replaced, still in earlier runs'
# configs).
UNOBSERVABLE_FIELDS = ("log_every_steps", "checkpoint_every_steps", "kept_cells", "alpha_kept_cells", "recompute")


def divergence_remedy(field):
    """Whether `field` may change when a run that diverged is resumed: a learning rate or clip."""
    return field.endswith("learning_rate") or "clip" in field


def field_defaults(config):
    """A dataclass config's field defaults: what a run whose stored config predates a field ran with."""
    return {field.name: field.default for field in dataclasses.fields(config)}


def claim_config(path, config, defaults=None):
    """Writes `config` to the JSON file `path`, or checks that the one there is the same. A
    field missing there (added to the code since) counts as its value in `defaults`. A rerun
    may change the fields in UNOBSERVABLE_FIELDS, and, where a run under the folder diverged
    (left a diverged.json), its learning rates and clipping; config.json follows."""
    path = Path(path)
    if not path.exists():
        write_json_atomic(path, config)
        return
    previous = {**{k: v for k, v in (defaults or {}).items() if k in config}, **read_json(path)}
    changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
    refused = [k for k in changed if k not in UNOBSERVABLE_FIELDS]
    if refused and all(divergence_remedy(k) for k in refused) and any(path.parent.rglob(DIVERGED_FILE)):
        refused = []
    if refused:
        diffs = ", ".join(f"{k}={previous.get(k)!r} there vs {config.get(k)!r} now" for k in refused)
        raise ScasError(f"{path.parent} holds a run with another config ({diffs}); use a new --output_dir")
    if changed:
        log.info("%s: %s", path.parent, ", ".join(f"{k} {previous.get(k)!r} -> {config.get(k)!r}" for k in changed))
        write_json_atomic(path, config)


class RunDir:
    """Paths of one run's outputs; `claim` ties the folder to one configuration."""

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.results = self.path / "results.json"
        self.checkpoints = self.path / "checkpoints"
        self.tensorboard = self.path / "tensorboard"
        self.saved_model = self.path / "saved_model"

    def claim(self, config):
        """Writes config.json (of the dataclass `config`), or checks that a folder being resumed
        was started with the same one."""
        if self.path.exists() and not self.path.is_dir():
            raise ScasError(f"output_dir is not a directory: {self.path}")
        claim_config(self.config, dataclasses.asdict(config), field_defaults(config))

    def finished_results(self):
        """The results of a run that finished in this folder, or None."""
        if not self.results.exists():
            return None
        log.info("%s is finished; its results are in %s", self.path, self.results)
        return read_json(self.results)

    def save_directory_atomic(self, target, write):
        """Calls write(tmp_dir) and moves the finished directory to `target`."""
        tmp = Path(tempfile.mkdtemp(dir=self.path, prefix=f".{target.name}."))
        try:
            write(str(tmp))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
