"""What `scas train` can train: a baseline's name, or `<space>:<encoding>` for an architecture
found by a search (e.g. `enas_micro:0 2 0 0 ...`). Architecture files hold the latter."""
from pathlib import Path

from scas_tf.errors import ScasError
from scas_tf.models import baselines, enas_macro, enas_micro
from scas_tf.spaces import enas_macro as macro_space
from scas_tf.spaces import enas_micro as micro_space

# Per search space: the encoding class and the fixed-network builder.
SPACES = {
    "enas_macro": (macro_space.MacroArch, enas_macro.build_macro_model),
    "enas_micro": (micro_space.MicroArch, enas_micro.build_micro_model),
}


def spec(space, arch):
    return f"{space}:{arch.to_text()}"


def parse(arch_spec):
    """(space, architecture) of a searched spec, or (None, name) of a baseline."""
    if ":" not in arch_spec:
        if arch_spec not in baselines.ARCHITECTURES:
            raise ScasError(f"unknown architecture {arch_spec!r}; choose one of "
                            f"{', '.join(baselines.ARCHITECTURES)}, or give --arch_file")
        return None, arch_spec
    space, text = (part.strip() for part in arch_spec.split(":", 1))
    if space not in SPACES:
        raise ScasError(f"unknown search space {space!r} in architecture; choose one of {', '.join(SPACES)}")
    return space, SPACES[space][0].from_text(text)


def read_arch_file(path):
    """The architecture spec stored in a file (as `scas search` writes architecture.txt)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ScasError(f"cannot read architecture file {path}: {e.strerror}") from None
    parse(text)
    return text


def build_model(arch_spec, info, filters=0, num_layers=0):
    """A functional Keras model of any architecture spec; 0 keeps the builder's default size."""
    space, arch = parse(arch_spec)
    if space is None:
        return baselines.build_baseline(arch, info)
    size = {"filters": filters} if filters else {}
    if num_layers and space == "enas_micro":
        size["num_layers"] = num_layers
    elif num_layers and num_layers != arch.num_layers:
        raise ScasError(f"an ENAS macro architecture fixes its depth: {arch.num_layers} layers, "
                        f"not num_layers={num_layers}")
    return SPACES[space][1](arch, info, **size)
