"""multitx's own tasks; importing this package registers them (engine/task.py: TASKS)."""

from multitx.tasks import caption, charlm, lm, mlm, vit  # noqa: F401
