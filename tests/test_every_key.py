"""Every value of every key, drawn by hypothesis: a run either trains or ends in one line
on stderr with exit 2 and no traceback; a value outside its key's rule is always refused,
and refusing it leaves the last checkpoint of a run folder byte-identical.

Values are drawn from each key's rule (the `rule` of its dataclass field, gathered by
multitx/engine/validation.py): valid ones kept small so that a run takes a fraction of a second,
invalid ones of every kind (wrong type, out of range, a folder where a file belongs...). Runs
are in-process: validation, then one step.
"""

import io
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multitx import caption, sample, train
from multitx.cli import load_config, run_cli
from multitx.config import rules as kinds
from multitx.config.settings import rules_of as field_rules
from multitx.engine import checkpoint, validation
from multitx.engine.task import task_class_of
from tests.conftest import tiny_caption_args, tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import fingerprint, image_args

pytestmark = pytest.mark.usefixtures("one_thread")

NOT_DRAWN = {"run_dir", "resume", "debug", "compile"}  # tested on their own: the run folder, a traceback, slowness
WORDS = st.sampled_from(["abc", "nope", "-", "x y", "3.5.1", "None", "[]"])


def as_arg(value) -> str:
    """A value as the command line writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(as_arg(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value.replace("/", "").replace("_", "").replace(".", "").replace("-", "").isalnum() \
            else "'" + value.replace("'", "") + "'"
    return repr(value)


class Draws:
    """Valid and invalid values for a rule; `paths` gives existing files and folders to use."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths

    def valid(self, key: str, rule: kinds.Rule):
        extra = [st.none()] if rule.null else []
        return st.one_of(self.valid_value(key, rule), *extra)

    def valid_value(self, key: str, rule: kinds.Rule):
        p = self.paths
        match rule:
            case kinds.Whole(min=low, max=high):
                low = 0 if low is None else low
                return st.integers(low, min(high if high is not None else low + 3, low + 3))
            case kinds.Number(min=low, max=high):
                low = 0.0 if low is None else low
                return st.floats(low + (1e-4 if rule.open in ("min", "both") else 0),
                                 min(high - 1e-3 if high is not None else 1.0, low + 1.0))
            case kinds.Choice(options=options):
                return st.sampled_from(options)
            case kinds.Flag():
                return st.booleans()
            case kinds.Text(prefix=prefix):
                return st.sampled_from(["timm:no_such_model_here"] if prefix else ["x", "charlm", "shapes"])
            case kinds.Names():
                return st.sampled_from(["json", ["json", "math"]])
            case kinds.Numbers(count=count, each=each):
                return st.lists(self.valid_value(key, each), min_size=count or 1, max_size=count or 3)
            case kinds.Size():
                return st.one_of(st.sampled_from([4, 8, 16]), st.lists(st.sampled_from([4, 8, 16]), min_size=2,
                                                                     max_size=2))
            case kinds.Workers():
                return st.sampled_from(["auto", 0])
            case kinds.Folder(must_exist=True):
                return st.just(str(p["folder"]))
            case kinds.Folder():
                return st.builds(lambda n: str(p["scratch"] / f"new{n}"), st.integers(0, 10**6))
            case kinds.File():
                return st.just(str(p["text"]))
            case kinds.Which():
                return st.sampled_from(["best", "latest"])
            case kinds.Target():
                return st.sampled_from(["val_loss<=100", "val_loss>=0", "val_loss <= 1e-3"])
        raise AssertionError(f"no valid values for {type(rule).__name__} of {key}: add them here")

    def invalid(self, key: str, rule: kinds.Rule):
        p = self.paths
        base = [st.just("null")] if not rule.null else []
        match rule:
            case kinds.Whole(min=low, max=high):
                out = [st.floats(0.5, 9.5).filter(lambda v: v != int(v)), WORDS, st.just(True)]
                if low is not None:
                    out.append(st.integers(low - 1000, low - 1))
                if high is not None:
                    out.append(st.integers(high + 1, high + 1000))
            case kinds.Number(min=low, max=high):
                out = [WORDS, st.sampled_from([float("nan"), float("inf")]), st.just(True)]
                if low is not None:
                    out.append(st.floats(low - 100, low, exclude_max=rule.open not in ("min", "both")))
                if high is not None:
                    out.append(st.floats(high, high + 100, exclude_min=rule.open not in ("max", "both")))
            case kinds.Choice(options=options):
                out = [WORDS.filter(lambda w: w not in options), st.just(7)]
            case kinds.Flag():
                out = [st.sampled_from(["maybe", "yes please", 2])]
            case kinds.Text(prefix=prefix):
                out = [st.just(" "), st.just(5)] + ([st.just("vit_tiny")] if prefix else [])
            case kinds.Names():
                out = [st.just(" "), st.just([])]
            case kinds.Numbers(count=count):
                out = [WORDS, st.just([]), st.lists(st.just("a"), min_size=1, max_size=3)]
                if count:
                    out.append(st.lists(st.just(0.5), min_size=count + 1, max_size=count + 2))
            case kinds.Size():
                out = [st.integers(-5, 0), st.just([4, 4, 4]), WORDS]
            case kinds.Workers():
                out = [st.integers(-9, -1), WORDS]
            case kinds.Folder(must_exist=must_exist):
                out = [st.just(str(p["text"]))] + ([st.just(str(p["missing"]))] if must_exist else [])
            case kinds.File(text=text):
                out = [st.just(str(p["missing"])), st.just(str(p["folder"]))] + \
                      ([st.just(str(p["latin1"]))] if text else [])
            case kinds.Which():
                out = [st.just(str(p["missing"])), st.just("newest")]
            case kinds.Target():
                out = [st.sampled_from(["val_loss", "<=1", "val_loss<1", "val_loss<=x", "val loss>=1"]), st.just(5)]
            case _:
                raise AssertionError(f"no invalid values for {type(rule).__name__} of {key}: add them here")
        return st.one_of(*out, *base)


def outcome(main, argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of one in-process command; 0 when it finished."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            run_cli(main, argv)
        except SystemExit as stop:
            return stop.code, err.getvalue()
    return 0, err.getvalue()


def assert_one_line(code: int, err: str, arg: str) -> None:
    assert code == 2, f"{arg}: exit {code}\n{err}"
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, f"{arg}: {err}"


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("every_key")
    text = tmp / "corpus.txt"
    write_line_corpus(text)
    latin1 = tmp / "latin1.txt"
    latin1.write_bytes("Ça coûte cher, élève!".encode("latin-1"))
    images = write_imagefolder(tmp / "images", per_class=4)
    scratch = tmp / "scratch"
    scratch.mkdir()
    return {"text": text, "latin1": latin1, "folder": images, "images": images, "missing": tmp / "missing",
            "scratch": scratch, "tmp": tmp}


TASKS = {
    # task: (arguments for a run in RUN_DIR of one step, examples drawn for each key)
    "charlm": (lambda p, run: tiny_charlm_args(p["text"], run, "steps=1", "eval_every=1", "eval_batches=1",
                                               "show_tokens=0", "plots=false", f"data_dir={p['tmp'] / 'datasets'}"), 2),
    "mlm": (lambda p, run: ["task=mlm", *(a for a in tiny_charlm_args(p["text"], run)[1:] if "show_tokens" not in a),
                             "steps=1", "eval_every=1", "eval_batches=1", "show_fills=0", "plots=false",
                             f"data_dir={p['tmp'] / 'datasets'}"], 1),
    "vit": (lambda p, run: image_args(p["images"], run, "steps=1", "eval_every=1", "plots=false",
                                      f"data_dir={p['tmp'] / 'd'}"),
            2),
    "caption": (lambda p, run: tiny_caption_args(run.parent, "steps=1", "eval_every=1", "eval_images=2",
                                                 "data.num_train=16", "data.num_val=4", "batch_size=4", "plots=false",
                                                 f"data_dir={p['tmp'] / 'datasets'}", f"run_dir={run}"), 2),
}


@pytest.fixture(scope="module")
def given_runs(paths) -> dict[str, Path]:
    """A finished one-step run of each task: the folder that bad values must leave as it is."""
    runs = {}
    for name, (args, _) in TASKS.items():
        runs[name] = paths["tmp"] / f"given_{name}"
        code, err = outcome(train.main, args(paths, runs[name]))
        assert code == 0, err
    return runs


@pytest.mark.parametrize("task", list(TASKS))
def test_every_key_of_every_task_has_a_rule(task, paths):
    cfg = load_config(TASKS[task][0](paths, paths["tmp"] / "probe"))
    rules = rules_of(cfg)
    assert [key for key, _ in validation.leaves(cfg) if key not in rules] == []


def rules_of(cfg) -> dict:
    return validation.rules_for(cfg, task_class_of(cfg).rules)


def task_keys(task: str) -> list[str]:
    """The keys of a task's composed config (drawn from for each key, every key of every task)."""
    args = TASKS[task][0](PROBE_PATHS, PROBE_PATHS["tmp"] / "probe")
    return sorted(key for key in rules_of(load_config(args)) if key not in NOT_DRAWN)


PROBE_PATHS = {name: Path(f"/nonexistent/{name}") for name in ("text", "images", "tmp")}
TASK_KEYS = [(task, key) for task in TASKS for key in task_keys(task)]


@pytest.fixture(scope="module")
def probe_rules(paths):
    """task -> the rules of its config as composed for a probe run: the same for each of the task's keys, so
    composed once per task, not once per key (a composition takes a quarter of a second)."""
    composed = {}

    def rules(task: str) -> dict:
        if task not in composed:
            composed[task] = rules_of(load_config(TASKS[task][0](paths, paths["tmp"] / "probe")))
        return composed[task]

    return rules


@pytest.mark.parametrize("task, key", TASK_KEYS, ids=[f"{t}:{k}" for t, k in TASK_KEYS])
def test_a_drawn_value_trains_or_is_one_line_and_the_run_folder_is_untouched(task, key, paths, given_runs,
                                                                              probe_rules):
    args, examples = TASKS[task]
    rule = probe_rules(task)[key]
    draws = Draws(paths)
    given_run = given_runs[task]
    before = fingerprint(given_run)

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(valid=st.booleans(), data=st.data())
    def check(valid, data):
        value = data.draw(draws.valid(key, rule) if valid else draws.invalid(key, rule), label="value")
        arg = f"{key}={as_arg(value)}"
        if not valid:  # refused before anything is built; the given run's checkpoint stays as it was
            code, err = outcome(train.main, [*args(paths, given_run), "resume=auto", arg])
            assert_one_line(code, err, arg)
            assert fingerprint(given_run) == before, arg
            return
        run = Path(tempfile.mkdtemp(dir=paths["scratch"]))
        try:
            code, err = outcome(train.main, [*args(paths, run / "run"), arg])
            if code == 0:
                assert checkpoint.latest(run / "run") is not None, arg
            else:
                assert_one_line(code, err, arg)
        finally:
            shutil.rmtree(run, ignore_errors=True)

    check()


COMMANDS = {
    "sample": (sample.main, field_rules(sample.SampleArgs), lambda runs, p: [f"run_dir={runs['charlm']}",
                                                                          "max_new_tokens=3"], 30),
    "caption": (caption.main, field_rules(caption.CaptionArgs),
                lambda runs, p: [f"run_dir={runs['caption']}", f"image={p['picture']}", "beam=1"], 20),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_drawn_value_for_a_loading_command_works_or_is_one_line(command, paths, given_runs):
    main, rules, args, examples = COMMANDS[command]
    picture = paths["tmp"] / "picture.png"
    if not picture.exists():
        shutil.copy(next((paths["images"] / "val").rglob("*.png")), picture)
    p = {**paths, "picture": picture}
    rules = {key: rule for key, rule in rules.items() if key != "debug"}
    draws = Draws({**p, "folder": given_runs["charlm"] if command == "sample" else given_runs["caption"],
                   "text": picture if command == "caption" else p["text"]})
    before = {name: fingerprint(run) for name, run in given_runs.items()}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(data=st.data())
    def check(data):
        key = data.draw(st.sampled_from(sorted(rules)), label="key")
        valid = data.draw(st.booleans(), label="valid")
        value = data.draw(draws.valid(key, rules[key]) if valid else draws.invalid(key, rules[key]), label="value")
        arg = f"{key}={as_arg(value)}"
        code, err = outcome(main, [*args(given_runs, p), arg])
        if code:
            assert_one_line(code, err, arg)
        else:
            assert valid, f"{arg} is outside its rule, yet {command} ran"

    check()
    assert {name: fingerprint(run) for name, run in given_runs.items()} == before
    torch.set_num_threads(1)
