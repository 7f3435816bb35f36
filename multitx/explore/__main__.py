"""python -m multitx.explore run_dir=DIR [checkpoint=best|latest|PATH] [host=127.0.0.1] [port=8000]
       [max_upload_mb=8] [device=auto] [trust_code=false]

A live explorer of a trained run of any task, in the browser: type a prompt (or drop an
image), and watch every layer and head attend, one query's q meet each key's k, the
softmax (with a temperature slider) and the weighted sum of the values, with each
tensor's shape; step through generation; compare two checkpoints of the run side by
side; save what the page shows as one self-contained HTML file.

It loads the run with multitx.load under the same trust rules as every tool, prints the
address, and serves one page until Ctrl-C. It listens on 127.0.0.1 only, unless host=
says otherwise (host=0.0.0.0 lets other machines in: only on a network you trust).
"""

from dataclasses import dataclass
from pathlib import Path

from multitx.cli import OnDevice, RunArgs, parse_args, run_cli
from multitx.config.rules import POSITIVE, Text, Whole
from multitx.config.settings import setting
from multitx.engine.runtime import setup_runtime
from multitx.errors import UserError
from multitx.explore.analysis import Explorer
from multitx.explore.app import LOOPBACK, build_app
from multitx.explore.server import address, bound, server


@dataclass
class ExploreArgs(OnDevice, RunArgs):
    host: str = setting("127.0.0.1", Text(), "the address to listen on; 0.0.0.0 lets other machines in")
    port: int = setting(8000, Whole(min=0, max=65535), "the port to listen on (0: any free one)")
    max_upload_mb: float = setting(8.0, POSITIVE, "the largest request (an uploaded image) accepted, in MB")


def main(argv: list[str]) -> None:
    args = parse_args(argv, ExploreArgs, __doc__)
    try:  # first, so that a port in use is said before the model is loaded
        listening = bound(str(args["host"]), int(args["port"]))
    except OSError as err:
        raise UserError(f"cannot listen on {args['host']}:{args['port']} ({err.strerror or err}); "
                        f"give another port=, or port=0 for any free one") from None
    runtime = setup_runtime(args["device"], "fp32")
    explorer = Explorer(Path(str(args["run_dir"])), str(args["checkpoint"]), device=runtime.device,
                        trust_code=args["trust_code"])
    host = str(args["host"])
    hosts = ("*",) if host not in ("127.0.0.1", "localhost", "::1") else LOOPBACK  # a Host header may name it
    app = build_app(explorer, max_bytes=int(args["max_upload_mb"] * 1_000_000), hosts=hosts)
    print(f"exploring {explorer.run_dir} ({explorer.about()['task']}, checkpoint {explorer.default}); "
          f"open {address(listening)}  (Ctrl-C stops)", flush=True)
    server(app).run(sockets=[listening])


if __name__ == "__main__":
    run_cli(main)
