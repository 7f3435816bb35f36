"""The table at the end of a sweep: `multitx train -m lr=1e-3,3e-3 steps=100,200 run_dir=runs/lr`
makes one run per combination in runs/lr/0, runs/lr/1, ... and then SWEEP_DIR/summary.csv and
summary.md, a row per run: its overrides and its final metrics, printed as the sweep ends.

Hydra calls `SweepSummary.on_multirun_end` (config/config.yaml lists it under hydra.callbacks).
Each run's row is read from its own folder (provenance.jsonl, metrics.jsonl), so the table is
the same whichever launcher ran the jobs, and `summarize(SWEEP_DIR)` rebuilds it at any time.
"""

import csv
import json
from pathlib import Path

from hydra.experimental.callback import Callback

from multitx.engine import provenance


def final_metrics(run_dir: Path) -> dict:
    """The last evaluation's numbers, and the test split's (test/...) where the run scored one."""
    numbers: dict = {}
    path = run_dir / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        prefix = "test/" if record.pop("split", None) == "test" else ""
        if not prefix:
            numbers = {k: v for k, v in numbers.items() if k.startswith("test/")}
        numbers.update({prefix + k: v for k, v in record.items() if isinstance(v, (int, float)) and
                        not (prefix and k == "step")})
    return numbers


def run_row(run_dir: Path, sweep_dir: Path) -> dict:
    records = provenance.read(run_dir)
    first = next((r for r in records if r.get("event") == "start"), {})
    last = records[-1] if records else {}
    return {"run": run_dir.relative_to(sweep_dir).as_posix(), "overrides": first.get("overrides") or [],
            "outcome": last.get("outcome", "running or killed") if last.get("event") == "end" else "running or killed",
            "metrics": final_metrics(run_dir)}


def job_folders(sweep_dir: Path) -> list[Path]:
    """The sweep's run folders, in job order (0, 1, 2, ... 10: by number, not as text)."""
    found = [p.parent for p in sweep_dir.glob("*/" + provenance.FILE)]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def swept_keys(rows: list[dict]) -> list[str]:
    """The keys of the overrides, in the order first given, each as its own column."""
    keys: list[str] = []
    for row in rows:
        for override in row["overrides"]:
            key = override.split("=", 1)[0]
            if key not in keys and not key.startswith("hydra."):
                keys.append(key)
    return keys


def summarize(sweep_dir) -> tuple[Path, Path, str, int]:
    """Write SWEEP_DIR/summary.csv (every override of every run) and summary.md (the keys whose value
    differs between runs, the others on a line above); return their paths, the markdown and the runs' count."""
    sweep_dir = Path(sweep_dir)
    rows = [run_row(folder, sweep_dir) for folder in job_folders(sweep_dir)]
    keys = swept_keys(rows)
    given = [dict(o.split("=", 1) for o in row["overrides"] if "=" in o) for row in rows]
    metric_names: list[str] = []
    for row in rows:
        metric_names += [name for name in row["metrics"] if name not in metric_names]
    columns = [f"final_{name}" if name in keys else name for name in metric_names]  # lr: swept and logged

    def table(shown_keys):
        header = ["run", *shown_keys, "outcome", *columns]
        lines = [[row["run"], *(values.get(k, "") for k in shown_keys), row["outcome"],
                  *(shown(row["metrics"].get(name)) for name in metric_names)]
                 for row, values in zip(rows, given, strict=True)]
        return header, lines

    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    header, lines = table(keys)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *lines])
    varying = [k for k in keys if len({values.get(k) for values in given}) > 1]
    same = " ".join(f"{k}={given[0][k]}" for k in keys if k not in varying and k in given[0])
    header, lines = table(varying)
    markdown = "\n".join([*([f"every run: {same}", ""] if same else []),
                          "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)])
    md_path.write_text(markdown + "\n", encoding="utf-8")
    return csv_path, md_path, markdown, len(rows)


def shown(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class SweepSummary(Callback):
    """Hydra callback: after the last job of a --multirun, the table of every run."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        csv_path, md_path, markdown, runs = summarize(sweep_dir)
        print(f"\nsweep of {runs} runs in {sweep_dir} ({csv_path.name}, {md_path.name}):\n{markdown}", flush=True)
