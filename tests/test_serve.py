"""issue 16: `sparktile serve` answers the official OpenAI client like a cloud model.

A uvicorn server on a free loopback port serves the golden backend (the shipped model, int8
matmuls: the path the RTL runs); the tests speak to it with the ``openai`` package and, for
requests no client would send, with raw HTTP.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client "
                                              "(pip install -e '.[dev]')")
uvicorn = pytest.importorskip("uvicorn", reason="sparktile serve needs uvicorn")

from sparktile.serve import GoldenBackend, StopMatcher, create_app, serving  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return GoldenBackend()


@pytest.fixture(scope="module")
def server(backend):
    with serving(create_app(backend, time_limit_s=60)) as url:
        yield url


@pytest.fixture
def client(server):
    # Closed at the end: an unclosed connection pool is a ResourceWarning that surfaces,
    # as an error, in whatever test the garbage collector happens to run in.
    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0,
                       timeout=60) as c:
        yield c


def _golden(backend, prompt, max_tokens, seed, temperature):
    g = backend.lm.generate(prompt, max_tokens, mode="int8", temperature=temperature,
                            seed=seed)
    return g.text


def test_models_lists_the_served_model(client, backend):
    ids = [m.id for m in client.models.list().data]
    assert ids == [backend.model_name]


@pytest.mark.parametrize("seed, temperature", [(7, 0.8), (3, 0.0)])
def test_completion_equals_the_golden_model(client, backend, seed, temperature):
    prompt = "def fibonacci(n):"
    r = client.completions.create(model=backend.model_name, prompt=prompt, max_tokens=24,
                                  seed=seed, temperature=temperature)
    want = _golden(backend, prompt, 24, seed, temperature)
    assert r.choices[0].text == want
    assert r.usage.completion_tokens == 24 or r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == backend.prompt_tokens(prompt)
    ext = r.model_extra["sparktile"]
    assert ext["backend"] == "golden"
    assert ext["wafer"]["tokens_per_s"] > 0 and ext["wafer"]["ttft_s"] > 0


def test_streamed_text_equals_the_non_streamed(client, backend):
    kw = dict(model=backend.model_name, prompt="import os\n", max_tokens=20, seed=11,
              temperature=0.9)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, **kw))
    assert len(chunks) > 2, "a stream of one chunk is not streaming"
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_stop_sequence_cuts_the_text(client, backend):
    kw = dict(model=backend.model_name, prompt="def f(x):\n", max_tokens=40, seed=5,
              temperature=0.0)
    full = client.completions.create(**kw).choices[0].text
    assert len(full) > 6
    stop = full[3:5]                             # a sequence that does occur
    cut = full[:full.find(stop)]
    r = client.completions.create(stop=[stop], **kw)
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        stop=stop, stream=True, **kw))
    assert streamed == cut


def test_chat_completion_streams_and_answers(client, backend):
    msgs = [{"role": "user", "content": "write a loop"}]
    r = client.chat.completions.create(model=backend.model_name, messages=msgs,
                                       max_tokens=12, seed=2)
    text = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant" and isinstance(text, str)
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=backend.model_name, messages=msgs, max_tokens=12, seed=2, stream=True)]
    assert "".join(parts) == text


def test_concurrent_clients_are_all_served(server, backend):
    results, errors = {}, []

    def one(i):
        try:
            with openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0,
                               timeout=120) as c:
                results[i] = c.completions.create(model=backend.model_name,
                                                  prompt=f"# {i}\n", max_tokens=8,
                                                  seed=i).choices[0].text
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors and len(results) == 8
    for i, text in results.items():
        assert text == _golden(backend, f"# {i}\n", 8, i, 1.0)


def test_a_disconnect_mid_stream_leaves_the_server_serving(server, client, backend):
    body = json.dumps({"prompt": "def g():", "max_tokens": 200, "stream": True,
                       "seed": 1}).encode()
    req = urllib.request.Request(server + "/v1/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.readline().startswith(b"data: ")     # the first chunk, then hang up
    r = client.completions.create(model=backend.model_name, prompt="x = ", max_tokens=4,
                                  seed=9)
    assert r.choices[0].text == _golden(backend, "x = ", 4, 9, 1.0)


def _post(server, path, raw: bytes):
    req = urllib.request.Request(server + path, raw, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("raw, status, param, words", [
    (b"{not json", 400, None, "not valid JSON"),
    (b"[1, 2]", 400, None, "JSON object"),
    (b'{"prompt": ""}', 400, "prompt", "non-empty string"),
    (b'{"prompt": "x", "max_tokens": 0}', 400, "max_tokens", "[1, "),
    (b'{"prompt": "x", "max_tokens": 100000}', 400, "max_tokens", "[1, "),
    (b'{"prompt": "x", "temperature": -1}', 400, "temperature", "[0, 2]"),
    (b'{"prompt": "x", "top_p": 0}', 400, "top_p", "(0, 1]"),
    (b'{"prompt": "x", "n": 2}', 400, "n", "n must be 1"),
    (b'{"prompt": "x", "seed": -3}', 400, "seed", "seed must be"),
    (b'{"prompt": "x", "stop": [1]}', 400, "stop", "stop must be"),
    (b'{"prompt": "x", "stream": "yes"}', 400, "stream", "true or false"),
    (b'{"prompt": "x", "model": "gpt-9"}', 404, "model", "does not exist"),
])
def test_malformed_requests_get_openai_errors(server, raw, status, param, words):
    code, body = _post(server, "/v1/completions", raw)
    assert code == status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and words in err["message"], err


def test_prompt_beyond_the_context(server, backend):
    prompt = "x" * (backend.context + 5)
    code, body = _post(server, "/v1/completions", json.dumps({"prompt": prompt}).encode())
    assert code == 400 and body["error"]["code"] == "context_length_exceeded"
    code, body = _post(server, "/v1/chat/completions", b'{"messages": []}')
    assert code == 400 and body["error"]["param"] == "messages"
    code, body = _post(server, "/v1/nothing", b"{}")
    assert code == 404 and "no route" in body["error"]["message"]


def test_stop_matcher_holds_back_a_possible_stop():
    m = StopMatcher(["END"])
    assert m.feed("abcE") == "abc"           # "E" may start END
    assert m.feed("N") == ""
    assert m.feed("Dxyz") == "" and m.stopped
    assert m.text == "abc"
    m = StopMatcher(["END"])
    assert m.feed("abcE") == "abc" and m.feed("x") == "Ex" and m.flush() == ""


def test_rtl_backend_streams_the_golden_tokens(backend):
    """The rtl backend: every matmul on a 2x2 Verilated mesh; the streamed text equals the
    golden backend's for the same seed, and the extension says every token matched."""
    from sparktile.hdl.mesh import MeshShape

    from sparktile.serve import RtlBackend
    rtl = RtlBackend(MeshShape(2, 2))
    with serving(create_app(rtl, time_limit_s=600)) as url:
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0,
                           timeout=600) as c:
            chunks = list(c.completions.create(model=rtl.model_name, prompt="x=",
                                               max_tokens=3, seed=4, temperature=0.8,
                                               stream=True))
            # A stop sequence ends the simulation itself, not only the text sent.
            want = _golden(backend, "x=", 12, 4, 0.8)
            stop = want[1:3]
            r = c.completions.create(model=rtl.model_name, prompt="x=", max_tokens=12,
                                     seed=4, temperature=0.8, stop=stop)
    text = "".join(ch.choices[0].text for ch in chunks)
    assert text == _golden(backend, "x=", 3, 4, 0.8)
    ext = chunks[-1].model_extra["sparktile"]
    assert ext["backend"] == "rtl" and ext["match_golden"] is True
    assert ext["rtl_cycles"] > 0
    assert r.choices[0].text == want[:want.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 12, "the simulator ran on after the stop sequence"
    assert r.model_extra["sparktile"]["match_golden"] is True


def test_board_backend_on_the_virtual_board(tmp_path):
    """The board backend: every matmul of a small random model on the virtual ULX3S board
    (the FPGA top in Verilator behind its bit-level UART, the same host code a real board
    gets); the streamed text equals the golden model's (about 10 s, the board build shared
    with tests/test_fpga_vboard.py)."""
    from sparktile.golden_model.checkpoint import save_sparktile_folder
    from sparktile.golden_model.testing import random_weights, tiny_config

    from sparktile.serve import BoardServeBackend
    cfg = tiny_config(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                      intermediate_size=16, name="micro-board")
    save_sparktile_folder(tmp_path / "m", cfg, random_weights(cfg))
    be = BoardServeBackend("sim", model=str(tmp_path / "m"))
    golden = GoldenBackend(str(tmp_path / "m"))
    try:
        with serving(create_app(be)) as url, openai.OpenAI(
                base_url=url + "/v1", api_key="x", max_retries=0, timeout=1200) as c:
            chunks = list(c.completions.create(model=be.model_name, prompt="ab",
                                               max_tokens=2, seed=3, stream=True))
    finally:
        be.close()
    text = "".join(ch.choices[0].text for ch in chunks)
    assert text == _golden(golden, "ab", 2, 3, 1.0)
    ext = chunks[-1].model_extra["sparktile"]
    assert ext["backend"] == "board" and ext["match_golden"] is True
    assert ext["matmuls_on_board"] > 0


def test_chat_uses_the_checkpoint_template(tmp_path):
    """A checkpoint with its own chat template (ChatML in a GGUF file, byte tokens so that
    every character counts) gets its conversation laid out by that template."""
    from sparktile.golden_model.chat import ChatTemplate
    from sparktile.golden_model.testing import tiny_config, write_gguf
    from test_golden_chat import CHATML
    # GPT-2's byte-to-unicode alphabet: one token per byte, then the merge write_gguf adds.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    alphabet = [chr(b if b in printable else next(extra)) for b in range(256)]
    cfg = tiny_config(vocab_size=257)
    write_gguf(tmp_path / "chat.gguf", cfg, tokens=alphabet + ["ab"], chat_template=CHATML)
    backend = GoldenBackend(str(tmp_path / "chat.gguf"))
    msgs = [{"role": "user", "content": "hi"}]
    expected = backend.lm.tokenizer.chat_template.render(msgs)
    assert expected.startswith("<|im_start|>system\n")
    with serving(create_app(backend, time_limit_s=60)) as url, \
            openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                          timeout=60) as c:
        r = c.chat.completions.create(model=backend.model_name, messages=msgs, max_tokens=3,
                                      seed=1)
        assert r.usage.prompt_tokens == len(expected.encode()) == \
            len(backend.lm.tokenizer.prompt_ids(expected))
        bad = [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]
        backend.lm.tokenizer.chat_template = ChatTemplate(
            "{{ raise_exception('the first message must be from the user') }}")
        with pytest.raises(openai.BadRequestError, match="first message must be from the user"):
            c.chat.completions.create(model=backend.model_name, messages=bad, max_tokens=3)
