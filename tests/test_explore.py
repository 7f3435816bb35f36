"""python -m multitx.explore, the server: what it computes for each kind of run (the trace's own numbers),
and that it is safe and steady: 127.0.0.1 by default, uploads bounded and decoded with the usual checks,
no file served but its own, every bad input one line in the answer while it goes on serving, and
concurrent requests that never mix their answers. The page itself: tests/test_explore_page.py."""

import base64
import io
import json
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from multitx.cli import load_config
from multitx.engine.trainer import train
from multitx.explore import app as app_module
from multitx.explore.analysis import Explorer, Source
from multitx.explore.app import build_app
from multitx.inspect.runs import inspect_run
from tests.conftest import REPO, run_here, torch_threads, write_line_corpus
from tests.helpers_explore import serving, tiny_runs
from tests.test_mlm import tiny_mlm_args
from tests.test_subword import lm_args

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def explorers(runs) -> dict[str, Explorer]:
    return {kind: Explorer(runs[kind]) for kind in ("charlm", "vit", "caption")}


@pytest.fixture(scope="module")
def clients(explorers) -> dict[str, TestClient]:
    return {kind: client(build_app(explorer, max_bytes=2_000_000)) for kind, explorer in explorers.items()}


def client(app) -> TestClient:
    """A client that addresses the app as a browser on this machine does (Host: 127.0.0.1)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


def png(size=(16, 16), colour=(200, 40, 40), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 0).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "red.png") -> dict:
    return {"image": "data:image/png;base64," + base64.b64encode(data).decode(), "name": name}


def unpacked(layer: dict) -> np.ndarray:
    """A layer's weights as the page reads them: (H, T, S) in [0, 1]."""
    raw = np.frombuffer(base64.b64decode(layer["weights"]), dtype=np.uint8)
    return raw.reshape(layer["heads"], layer["queries"], layer["keys"]) / 255


# What it computes

def test_the_run_is_described_for_the_page(clients):
    text, image = clients["charlm"].get("/api/run").json(), clients["vit"].get("/api/run").json()
    assert (text["task"], text["view"], text["input"], text["writes"]) == ("charlm", "tokens", "text", True)
    assert [c["name"] for c in text["checkpoints"]] == ["step_0000003", "step_0000006"]
    assert text["checkpoint"] == next(c["name"] for c in text["checkpoints"] if c["best"])
    assert text["example"] and text["max_upload_bytes"] == 2_000_000
    assert (image["view"], image["input"], image["writes"]) == ("patches", "image", False)
    assert image["example"].startswith("data:image/png;base64,")
    assert clients["caption"].get("/api/run").json()["writes"] is True


def test_a_prompts_weights_are_the_traces_own(clients, runs):
    answer = clients["charlm"].post("/api/attention", json={"prompt": "To be, or not"}).json()
    traced = inspect_run(runs["charlm"], prompt="To be, or not", new_tokens=0)
    assert answer["labels"]["tokens"] == traced.tokens == list("To␣be,␣or␣not")
    assert len(answer["layers"]) == len(traced.trace.attention) == 2
    for layer, record in zip(answer["layers"], traced.trace.attention, strict=True):
        assert (layer["name"], layer["kind"], layer["query_labels"]) == (record.name, "self", "tokens")
        assert np.abs(unpacked(layer) - record.weights[0].numpy()).max() <= 0.5 / 255 + 1e-6
        assert np.allclose(np.triu(unpacked(layer)[0], 1), 0)  # causal: no later token is read
    assert abs(sum(c["p"] for c in answer["next"])) <= 1 and len(answer["next"]) == 5
    assert "(B, H, T, Dh)" in answer["shapes"]


def test_an_images_answer_has_its_picture_grid_classes_and_rollout(clients, runs):
    answer = clients["vit"].post("/api/attention", json=upload(png(), "red.png")).json()
    assert answer["source"] == "the uploaded file red.png" and answer["grid"] == [4, 4] and answer["prefix"] == 1
    assert answer["labels"]["patches"][:2] == ["CLS", "patch (0,0)"] and len(answer["rollout"]) == 16
    shown = Image.open(io.BytesIO(base64.b64decode(answer["image"].split(",")[1])))
    assert shown.size == (16, 16) and shown.getpixel((8, 8)) == (200, 40, 40)
    assert abs(sum(c["p"] for c in answer["classes"]) - 1) < 1e-4
    first = unpacked(answer["layers"][0])
    assert first.shape == (2, 17, 17) and np.allclose(first.sum(-1), 1, atol=17 / 255)


def test_the_captioner_steps_word_by_word(clients):
    whole = clients["caption"].post("/api/attention", json=upload(png())).json()
    written = whole["caption"]["written"]
    assert whole["caption"]["done"] and len(whole["caption"]["words"]) == written
    two = clients["caption"].post("/api/attention", json={**upload(png()), "words": 2}).json()
    assert two["caption"] == {"words": whole["caption"]["words"][:2], "written": written, "done": written <= 2}
    cross = next(layer for layer in two["layers"] if layer["kind"] == "cross")
    assert (cross["queries"], cross["keys"], cross["query_labels"], cross["key_labels"]) == (2, 16, "writes",
                                                                                              "patches")
    full_cross = next(layer for layer in whole["layers"] if layer["kind"] == "cross")
    assert np.array_equal(unpacked(cross), unpacked(full_cross)[:, :2])  # causal: the same as when written


def test_the_neuron_view_spells_out_what_the_layer_computed(clients):
    answer = clients["charlm"].post("/api/neuron", json={"prompt": "To be, or not", "layer": 1, "head": 1,
                                                         "query": 4}).json()
    q, k, v = np.array(answer["q"]), np.array(answer["k"]), np.array(answer["v"])
    assert (q.shape, k.shape, answer["query_label"]) == ((16,), (13, 16), "e")
    assert np.allclose(answer["qk"], q * k, atol=1e-5) and np.allclose(answer["scores"], (q * k).sum(-1), atol=1e-4)
    assert np.allclose(answer["scaled"], np.array(answer["scores"]) / 4, atol=1e-5)  # 1/√Dh, Dh = 16
    assert answer["allowed"] == [True] * 5 + [False] * 8  # query 4 sees keys 0..4
    scaled = np.array(answer["scaled"])[:5]
    softmax = np.exp(scaled - scaled.max()) / np.exp(scaled - scaled.max()).sum()
    assert np.allclose(answer["weights"][:5], softmax, atol=1e-5) and not any(answer["weights"][5:])
    assert np.allclose(answer["mixed"], np.array(answer["weights"]) @ v, atol=1e-5)
    assert answer["shapes"]["q"] == "(B=1, H=2, T=13, Dh=16)"
    assert answer["shapes"]["weights"] == "(B=1, H=2, T=13, S=13)"


def test_generate_writes_one_token_the_same_way_for_the_same_prompt(clients):
    first = clients["charlm"].post("/api/generate", json={"prompt": "To be"}).json()
    again = clients["charlm"].post("/api/generate", json={"prompt": "To be"}).json()
    assert first == again and first["prompt"].startswith("To be") and len(first["prompt"]) == 6
    assert 0 < first["p"] <= 1 and len(first["candidates"]) == 5
    refused = clients["vit"].post("/api/generate", json={"prompt": "x"})
    assert refused.status_code == 400 and "does not write" in refused.json()["error"]


def test_two_checkpoints_give_their_own_weights(clients):
    early = clients["charlm"].post("/api/attention", json={"prompt": "To be", "checkpoint": "step_0000003"}).json()
    late = clients["charlm"].post("/api/attention", json={"prompt": "To be", "checkpoint": "step_0000006"}).json()
    assert early["checkpoint"] == "step_0000003" and early["layers"][0]["weights"] != late["layers"][0]["weights"]


def test_the_text_tasks_that_read_both_ways_or_in_subwords_are_explored_too(tmp_path):
    corpus = write_line_corpus(tmp_path / "corpus.txt")
    with torch_threads(1):
        train(load_config(tiny_mlm_args(corpus, tmp_path / "mlm", "steps=2", "eval_every=2")))
        train(load_config(lm_args(corpus, tmp_path / "lm", "steps=2", "eval_every=2")))
    mlm, lm = client(build_app(Explorer(tmp_path / "mlm"))), client(build_app(Explorer(tmp_path / "lm")))
    assert mlm.get("/api/run").json()["writes"] is False and lm.get("/api/run").json()["writes"] is True
    both_ways = mlm.post("/api/attention", json={"prompt": "To be, or"}).json()
    assert "next" not in both_ways and np.triu(unpacked(both_ways["layers"][0])[0], 1).sum() > 0.5
    assert mlm.post("/api/generate", json={"prompt": "To"}).status_code == 400
    subwords = lm.post("/api/attention", json={"prompt": "To be, or not to be"}).json()
    assert 1 < len(subwords["labels"]["tokens"]) < len("To be, or not to be")  # BPE merged some characters
    assert lm.post("/api/generate", json={"prompt": "To be"}).json()["prompt"].startswith("To be")


# Bad input: one line in the answer, and the server serves on

BAD = [
    ("charlm", "/api/attention", {"prompt": "héllo"}, 400, "characters this model never saw in training"),
    ("charlm", "/api/attention", {"prompt": ""}, 400, "the prompt is empty"),
    ("charlm", "/api/attention", {"prompt": 3}, 400, "prompt must be text"),
    ("charlm", "/api/attention", {"prompt": "To", "checkpoint": "step_9"}, 400, "no checkpoint 'step_9'"),
    ("charlm", "/api/neuron", {"prompt": "To", "layer": 7, "head": 0, "query": 0}, 400, "layer 7 does not exist"),
    ("charlm", "/api/neuron", {"prompt": "To", "layer": 0, "head": 0, "query": 5}, 400, "is outside"),
    ("charlm", "/api/neuron", {"prompt": "To", "layer": "0", "head": 0, "query": 0}, 400, "layer must be a whole"),
    ("vit", "/api/attention", upload(b"GIF89a, or so it says", "notes.txt"), 400,
     "cannot read image the uploaded file notes.txt"),
    ("vit", "/api/attention", {"image": "data:image/png;base64,@@@", "name": "x.png"}, 400, "is not base64"),
    ("vit", "/api/attention", upload(png((7000, 7000), mode="L"), "huge.png"), 400, "more than 40 million"),
    ("caption", "/api/attention", {**upload(png()), "words": 0}, 400, "words must be a whole number"),
]


@pytest.mark.parametrize("kind, path, body, status, message", BAD, ids=[b[4][:30] for b in BAD])
def test_a_bad_input_is_one_line_and_the_next_request_is_answered(clients, kind, path, body, status, message):
    answer = clients[kind].post(path, json=body)
    assert answer.status_code == status and message in answer.json()["error"], answer.text[:300]
    assert "\n" not in answer.json()["error"] and "Traceback" not in answer.text
    good = {"prompt": "To be"} if kind == "charlm" else upload(png())
    assert clients[kind].post("/api/attention", json=good).status_code == 200


def test_a_body_that_is_not_json_is_refused(clients):
    answer = clients["charlm"].post("/api/attention", content=b"prompt=To be")
    assert answer.status_code == 400 and answer.json() == {"error": "the request is not JSON"}


def test_a_bug_is_one_line_and_the_server_serves_on(clients, explorers, monkeypatch):
    def broken(*args):
        raise RuntimeError("something inside broke")
    monkeypatch.setattr(explorers["charlm"], "attention", broken)
    answer = clients["charlm"].post("/api/attention", json={"prompt": "To be"})
    assert answer.status_code == 500 and answer.json() == {"error": "internal error: RuntimeError: something "
                                                                    "inside broke"}
    monkeypatch.undo()
    assert clients["charlm"].post("/api/attention", json={"prompt": "To be"}).status_code == 200


def test_a_request_naming_another_host_is_refused(clients, explorers):
    assert clients["charlm"].get("/api/run", headers={"host": "attacker.example:8000"}).status_code == 400
    assert clients["charlm"].get("/api/run", headers={"host": "localhost:8000"}).status_code == 200
    anywhere = client(build_app(explorers["charlm"], hosts=("*",)))  # host=0.0.0.0: other machines' names
    assert anywhere.get("/api/run", headers={"host": "workstation.lan:8000"}).status_code == 200


# Uploads are bounded

def test_an_upload_past_the_limit_is_refused_before_it_is_read(clients):
    big = upload(png((1200, 1200), mode="RGB") + b"\0" * 2_000_000)
    answer = clients["vit"].post("/api/attention", json=big)
    assert answer.status_code == 413 and "more than the 2.0 MB allowed (max_upload_mb=)" in answer.json()["error"]


def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(clients):
    sent = []

    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for _ in range(40):
            sent.append(1)
            yield b"x" * 100_000
    answer = clients["vit"].post("/api/attention", content=chunks())
    assert answer.status_code == 413 and "more than the 2.0 MB allowed" in answer.json()["error"]


# Only its own files

def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET path exactly as written (no client tidies the dots away), over a plain socket."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


TRAVERSALS = ["/static/../../pyproject.toml", "/static/..%2f..%2f..%2fpyproject.toml",
              "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml", "/static/explorer.js/../../app.py",
              "/static/%2e%2e%2fapp.py", "/static/..\\app.py", "/static/%2fetc%2fpasswd", "/static//etc/passwd",
              "/../../../../etc/passwd", "/static/__init__.py", "/static/../analysis.py", "/static/index.html%00.py"]


def test_no_path_reaches_a_file_the_explorer_did_not_make(explorers):
    secrets = [b"[project]", b"root:", b"import ", b"def "]
    with serving(explorers["charlm"]) as url:
        for path in TRAVERSALS:
            status, body = raw_get(url, path)
            assert status in (400, 404) and not any(s in body for s in secrets), (path, status, body[:200])
        for name in ("index.html", "explorer.js", "explorer.css"):
            status, body = raw_get(url, f"/static/{name}")
            assert status == 200 and body == (REPO / "multitx/explore/static" / name).read_bytes()


# Requests at once

def test_concurrent_requests_each_get_their_own_answer(explorers):
    import httpx

    prompts = [("To be, or not to be"[: 4 + i % 14] + " ") * (1 + i % 3) for i in range(20)]
    alone = {p: explorers["charlm"].attention("step_0000006", Source(prompt=p))["layers"] for p in prompts}
    with serving(explorers["charlm"]) as url, httpx.Client(base_url=url, timeout=60) as client:
        barrier = threading.Barrier(20)

        def ask(prompt):
            barrier.wait()  # all twenty leave together
            return prompt, client.post("/api/attention", json={"prompt": prompt})
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, prompts))
    assert all(a.status_code == 200 for _, a in answers)
    for prompt, answer in answers:
        assert answer.json()["source"] == f"prompt={prompt!r}" and answer.json()["layers"] == alone[prompt]


# The command

def test_the_command_listens_on_127_0_0_1_and_prints_its_address(runs):
    process = subprocess.Popen([sys.executable, "-m", "multitx.explore", f"run_dir={runs['charlm']}", "port=0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = process.stdout.readline()
        assert "open http://127.0.0.1:" in line, line + process.stderr.read()
        url = line.split("open ")[1].split()[0].rstrip("/")
        status, body = raw_get(url, "/api/run")
        assert status == 200 and json.loads(body)["task"] == "charlm"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_port_in_use_and_a_missing_run_are_one_line(runs, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_here("multitx.explore", f"run_dir={runs['charlm']}", f"port={port}")
    assert result.returncode == 2 and result.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); give another port=, or port=0 for "
        f"any free one")
    missing = run_here("multitx.explore", f"run_dir={tmp_path / 'nothing'}")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr


def test_the_served_files_are_the_ones_listed():
    on_disk = {p.name for p in (REPO / "multitx/explore/static").iterdir()}
    assert on_disk == set(app_module.STATIC)
