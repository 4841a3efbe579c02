"""A run is one folder: config, TensorBoard events, checkpoints, architecture, results, export.

Files are written atomically (temporary file, then rename) so that an interrupted run never
leaves a half-written result; checkpoints are TensorFlow's, whose writer also renames.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

from scas_tf.errors import ScasError


def write_text_atomic(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
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
        """Writes config.json, or checks that a folder being resumed was started with the same one."""
        if self.path.exists() and not self.path.is_dir():
            raise ScasError(f"output_dir is not a directory: {self.path}")
        if self.config.exists():
            previous = read_json(self.config)
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            if changed:
                diffs = ", ".join(f"{k}={previous.get(k)!r} there vs {config.get(k)!r} now" for k in changed)
                raise ScasError(f"output_dir {self.path} holds a run with another config ({diffs}); "
                                "use a new --output_dir")
        else:
            write_json_atomic(self.config, config)

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
