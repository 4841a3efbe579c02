"""What `scas train` can train: a baseline's name, or `<space>:<encoding>` for an architecture
found by a search (e.g. `enas_micro:0 2 0 0 ...`, `darts:normal=[...], ...`, `darts:DARTS_V2` or
`smash:smash-v1 N=8 ...`).
Architecture files hold the latter."""
from pathlib import Path

from scas_tf.errors import ScasError
from scas_tf.models import baselines, darts, enas_macro, enas_micro, smash
from scas_tf.spaces import darts as darts_space
from scas_tf.spaces import enas_macro as macro_space
from scas_tf.spaces import enas_micro as micro_space
from scas_tf.spaces import smash as smash_space

# Per search space: the encoding class and the fixed-network builder.
SPACES = {
    "enas_macro": (macro_space.MacroArch, enas_macro.build_macro_model),
    "enas_micro": (micro_space.MicroArch, enas_micro.build_micro_model),
    "darts": (darts_space.Genotype, darts.build_darts_model),
    "smash": (smash_space.SmashArch, smash.build_smash_model),
}
# Spaces whose networks take a depth (cells) or a width; an ENAS macro architecture fixes its
# depth, a SMASH architecture both.
SIZED_BY_NUM_LAYERS = ("enas_micro", "darts")
SIZED_BY_FILTERS = ("enas_macro", "enas_micro", "darts")


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


def build_model(arch_spec, info, filters=0, num_layers=0, auxiliary=False, drop_path=0.0, dropout=None):
    """A functional Keras model of any architecture spec; 0 (None for dropout) keeps the
    builder's default. `auxiliary`, `drop_path` and `dropout` exist for searched architectures
    (DARTS networks have no dropout)."""
    space, arch = parse(arch_spec)
    if space is None:
        if auxiliary or drop_path or dropout is not None:
            raise ScasError("auxiliary_weight, drop_path and dropout apply to searched architectures only")
        return baselines.build_baseline(arch, info)
    if filters and space not in SIZED_BY_FILTERS:
        raise ScasError(f"a {space} architecture fixes its widths; filters does not apply")
    size = {"filters": filters} if filters else {}
    if num_layers and space in SIZED_BY_NUM_LAYERS:
        size["num_layers"] = num_layers
    elif num_layers and num_layers != getattr(arch, "num_layers", None):
        raise ScasError(f"a {space} architecture fixes its depth; num_layers={num_layers} does not apply")
    if dropout is not None:
        if space == "darts":
            raise ScasError("DARTS networks have no dropout")
        size["dropout"] = dropout
    return SPACES[space][1](arch, info, auxiliary=auxiliary, drop_path=drop_path, **size)


def model_builder(config, info):
    """A function building the network a TrainConfig describes (for trainer.train)."""
    return lambda: build_model(config.arch, info, config.filters, config.num_layers,
                               config.auxiliary_weight > 0, config.drop_path, config.dropout)
