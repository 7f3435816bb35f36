"""A run's length in epochs: epochs=, warmup_epochs= and eval_every_epochs= worked out as steps.

One optimizer step consumes batch_size x grad_accum x world_size examples, and the sampler
(multitx/data/sampler.py) cuts each epoch of n items into n // (batch_size x world_size)
global batches, dropping the incomplete last one, so

    batches_per_epoch = train_items // (batch_size x world_size)      (Task.train_items(): n)
    steps             = epochs x batches_per_epoch // grad_accum        (steps_for)

and likewise warmup_steps from warmup_epochs, eval_every from eval_every_epochs (at least 1).
The steps replace the YAML's in the run's config, so RUN_DIR/config.yaml records them, and a
resume (same data, same global batch: run_setup.check_same_global_batch) works out the same.

Which one counts, pair by pair: the one the user gave. A recipe may be written in epochs
(task/vit_fashion.yaml: epochs: 12, steps: null); a steps= of the user's own (one that is not
the task file's value, e.g. steps=500 on the command line) then wins over the file's epochs,
which are set aside (epochs: null in config.yaml) and said so. Both given by the user is
refused, unless the steps are the very number the epochs give (a config that was resolved
already, as on a resume); so is neither (both null). The same for each of the three pairs.
A task without epochs (Task.train_items() is None: charlm's random windows of a text)
refuses all three.
"""

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from multitx.config.compose import defaults_for
from multitx.engine.task import Task
from multitx.errors import UserError

IN_EPOCHS = {"epochs": "steps", "warmup_epochs": "warmup_steps", "eval_every_epochs": "eval_every"}


def steps_for(epochs: int, train_items: int, batch_size: int, world_size: int = 1, grad_accum: int = 1) -> int:
    """Optimizer steps in `epochs` epochs: epochs x (train_items // (batch_size x world_size)) // grad_accum."""
    return epochs * (train_items // (batch_size * world_size)) // grad_accum


def in_epochs(cfg: DictConfig) -> list[str]:
    """The *_epochs keys this run sets."""
    return [key for key in IN_EPOCHS if cfg.get(key) is not None]


def no_epochs(cfg: DictConfig, keys: list[str], why: str = "its train_items() is None") -> UserError:
    return UserError(f"task={cfg.task.name} has no epochs ({why}): give "
                     f"{', '.join(IN_EPOCHS[key] + '=' for key in keys)} instead of {', '.join(k + '=' for k in keys)}")


def check_has_epochs(cfg: DictConfig, task_class: type[Task]) -> None:
    """Before any data is loaded: each pair has a value (steps= or epochs=, ...), and a task class that
    keeps Task's train_items (None) has no epochs."""
    for key, target in IN_EPOCHS.items():
        if cfg.get(key) is None and cfg.get(target) is None:
            raise UserError(f"{target} and {key} are both null: give {target}=N or {key}=N")
    keys = in_epochs(cfg)
    if keys and task_class.train_items is Task.train_items:
        raise no_epochs(cfg, keys, task_class.no_epochs_because)


def task_defaults(cfg: DictConfig) -> DictConfig | None:
    """The config of the task's own file with nothing given, whose steps are not the user's; None where
    there is no such file (a task.name of the user's own): then no steps counts as given."""
    try:
        return defaults_for((f"task={cfg.task.name}",))
    except (HydraException, OmegaConfBaseException):
        return None


def resolve_length(cfg: DictConfig, train_items: int | None, world_size: int, say=print) -> None:
    """Replace steps, warmup_steps and eval_every in cfg by what the *_epochs keys give (see the module doc)."""
    keys = in_epochs(cfg)
    if not keys:
        return
    if train_items is None:
        raise no_epochs(cfg, keys)
    global_batch = cfg.batch_size * world_size
    batches = train_items // global_batch
    if batches == 0:
        of = f"batch_size={cfg.batch_size}" + (f" x {world_size} processes" if world_size > 1 else "")
        raise UserError(f"an epoch of {train_items} examples holds no whole batch of {global_batch} ({of}): "
                        f"lower batch_size, or give steps=")
    defaults = task_defaults(cfg)
    set_aside = []
    for key in keys:
        target, epochs = IN_EPOCHS[key], cfg[key]
        value = steps_for(epochs, train_items, cfg.batch_size, world_size, cfg.grad_accum)
        if target == "steps" and value < 1:
            raise UserError(f"epochs={epochs} of {batches} batches make no whole step of grad_accum={cfg.grad_accum} "
                            f"batches: give more epochs, or a smaller grad_accum")
        value = max(value, 1) if target == "eval_every" else value
        given = cfg[target]
        steps_given = defaults is not None and given is not None and given != defaults.get(target) and given != value
        epochs_given = defaults is None or epochs != defaults.get(key)
        if steps_given and epochs_given:
            raise UserError(f"{target}={given} and {key}={epochs} both say how long: give one of them "
                            f"({key}={epochs} makes {target}={value} here)")
        if steps_given:  # the user's steps over the task file's epochs
            cfg[key] = None
            set_aside.append(f"{target}={given} given: the task file's {key}={epochs} set aside")
        else:
            cfg[target] = value
    keys = in_epochs(cfg)
    per_epoch = f"{batches / cfg.grad_accum:g}"
    head = f"{cfg.steps} steps = {cfg.epochs} epochs of {per_epoch} steps" if cfg.get("epochs") is not None \
        else f"an epoch is {per_epoch} steps"
    rest = ", ".join(f"{IN_EPOCHS[k]}={cfg[IN_EPOCHS[k]]} ({cfg[k]} epoch{'' if cfg[k] == 1 else 's'})"
                     for k in keys if k != "epochs")
    say(f"{head} ({train_items} examples an epoch, batches of {global_batch}"
        f"{f' x grad_accum {cfg.grad_accum}' if cfg.grad_accum > 1 else ''}){'; ' + rest if rest else ''}"
        f"{''.join('; ' + s for s in set_aside)}", flush=True)
