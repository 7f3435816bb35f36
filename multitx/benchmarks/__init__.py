"""The benchmarks: `python -m multitx.benchmarks.NAME key=value ...`, each key defined once by a
`setting(...)` of the benchmark's `<Name>Args`; `--help` prints a benchmark's docstring and keys."""

from multitx.config.settings import defaults_of


def own_and_training(argv: list[str], keys) -> tuple[list[str], list[str]]:
    """A benchmark that trains: its own arguments (its keys; anything starting with -, which is --help, a
    --FLAG of a true/false key, or a mistake that parse_args reports in one line) and the training
    settings (every other key=value, as for python -m multitx.train, checked by load_config)."""
    if any(arg in ("-h", "--help") for arg in argv):
        return ["--help"], []
    names = set(defaults_of(keys))
    own = [arg.startswith("-") or arg.partition("=")[0] in names for arg in argv]
    return ([arg for arg, mine in zip(argv, own, strict=True) if mine],
            [arg for arg, mine in zip(argv, own, strict=True) if not mine])
