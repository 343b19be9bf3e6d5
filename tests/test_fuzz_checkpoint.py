"""Property-based fuzzing of the golden model's parsers (issue 17).

Four parsers read untrusted input: the config parser (:meth:`ModelConfig.from_sparktile`,
:meth:`ModelConfig.from_hf`), the project-format checkpoint loader (:func:`load_model` on a
folder), the safetensors reader and the GGUF reader. Each test starts from a valid small file
written by the project's own writers, mutates it (JSON fields set to random types and values,
bytes flipped, overwritten, inserted, deleted, the file truncated, length fields replaced),
and asserts only this: the parser either succeeds, with a result consistent with its input,
or raises :class:`CheckpointError`. Any other exception is a bug; so is an example slower
than :data:`TIME_LIMIT_S` (a SIGALRM stops a hang) or a peak memory growth above
:data:`MEMORY_LIMIT_MB` (a header claiming gigabytes must be refused, not allocated).

Default tier: :data:`DEFAULT_EXAMPLES` per parser, derandomized (reproducible in CI).
Long tier (``pytest -m fuzz tests/test_fuzz_checkpoint.py``): :data:`LONG_EXAMPLES` per parser.
"""

from __future__ import annotations

import json
import math
import resource
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fuzzing import run_long, time_limit
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from sparktile.golden_model import CheckpointError, load_model
from sparktile.golden_model.checkpoint import save_sparktile_folder
from sparktile.golden_model.config import ModelConfig
from sparktile.golden_model.gguf_loader import load_gguf
from sparktile.golden_model.safetensors_io import read_safetensors
from sparktile.golden_model.testing import random_weights, tiny_config, write_gguf

#: Examples per parser in the default tier (every CI run).
DEFAULT_EXAMPLES = 300
#: Examples per parser in the long tier (``-m fuzz``).
LONG_EXAMPLES = 100_000
#: Wall-clock bound of one example (a loaded 2-core machine): beyond it the example fails.
TIME_LIMIT_S = 5.0
#: The same bound in the long tier, which runs for half an hour or more beside other jobs:
#: two 100,000-input runs of the GGUF reader each stopped once on a 5 s bound at an example
#: that took 31 ms when replayed (the machine, not the parser, had stalled). A hang is
#: unbounded, so a longer bound still catches one.
LONG_TIME_LIMIT_S = 30.0
_limit = [TIME_LIMIT_S]
#: Peak resident memory may grow by at most this much over a whole test.
MEMORY_LIMIT_MB = 512

# A falsifying example holds a whole (small) file; its repr must not turn into the failure.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

_COMMON = dict(deadline=timedelta(seconds=TIME_LIMIT_S), database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DEFAULT = settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_COMMON)
LONG = settings(max_examples=LONG_EXAMPLES,
               **{**_COMMON, "deadline": timedelta(seconds=LONG_TIME_LIMIT_S)})


@pytest.fixture(autouse=True)
def _tier_time_limit(request):
    """The long tier's examples get :data:`LONG_TIME_LIMIT_S`."""
    _limit[0] = LONG_TIME_LIMIT_S if request.node.get_closest_marker("fuzz") else TIME_LIMIT_S
    yield
    _limit[0] = TIME_LIMIT_S

# The smallest valid model of each kind: fuzzing cost is per byte and per tensor.
MICRO = tiny_config(vocab_size=256, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                    head_dim=4, intermediate_size=8, max_position_embeddings=16,
                    bos_token_id=0, eos_token_ids=(1,), name="micro")
MICRO_GGUF = tiny_config(vocab_size=16, hidden_size=8, num_layers=1, num_heads=2,
                         num_kv_heads=1, head_dim=4, intermediate_size=8,
                         max_position_embeddings=16, bos_token_id=0, eos_token_ids=(1,),
                         name="micro")

_WORK = Path(tempfile.mkdtemp(prefix="sparktile-fuzz-"))


def _valid_files():
    folder = _WORK / "base"
    save_sparktile_folder(folder, MICRO, random_weights(MICRO))
    write_gguf(_WORK / "base.gguf", MICRO_GGUF)
    return folder


BASE = _valid_files()
BASE_CONFIG = json.loads((BASE / "config.json").read_text())
BASE_ST = (BASE / "model.safetensors").read_bytes()
BASE_GGUF = (_WORK / "base.gguf").read_bytes()
HF_CONFIG = {
    "model_type": "llama", "vocab_size": 256, "hidden_size": 8, "intermediate_size": 8,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "rope_theta": 1e4, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": [1, 2],
    "rope_scaling": None, "head_dim": 4, "attention_bias": False}


# ------------------------------------------------------------------ guards



def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


@pytest.fixture
def memory_bound():
    before = _peak_mb()
    yield
    grown = _peak_mb() - before
    assert grown < MEMORY_LIMIT_MB, f"peak memory grew by {grown:.0f} MB"


def _event(what: str) -> None:
    """Count outcomes (``--hypothesis-show-statistics``): a fuzz test that accepts nothing
    or refuses nothing exercises only half of the parser."""
    if currently_in_test_context():
        event(what)


def _outcome(fn, *args):
    """``fn(*args)``, or None if it raised CheckpointError; anything else propagates."""
    with time_limit(_limit[0]):
        try:
            out = fn(*args)
            _event("accepted")
            return out
        except CheckpointError as e:
            msg = str(e)
            _event("refused")
            # A message the user can read: one line, not empty, not a dump of the data.
            assert msg.strip() and "\n" not in msg and len(msg) < 5000, msg[:300]
            return None


# ------------------------------------------------------------------ strategies

_EDGE_INTS = st.sampled_from([0, 1, -1, 2, 3, 4, 7, 8, 16, 255, 256, 257, 2 ** 31, 2 ** 63,
                              -2 ** 63, 2 ** 64, 10 ** 30])
_SCALARS = st.one_of(
    st.none(), st.booleans(), _EDGE_INTS, st.integers(-2 ** 70, 2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["4", "", "linear",
                                                                     "llama3", "bytes"]),
    st.text(max_size=12))
JSON_VALUES = st.recursive(
    _SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                  max_size=4),
    max_leaves=8)
ROPE_SCALING = st.one_of(JSON_VALUES, st.fixed_dictionaries(
    {"rope_type": st.sampled_from(["linear", "llama3", "default", "yarn", 5])},
    optional={"factor": st.one_of(st.floats(-4, 16), JSON_VALUES),
              "low_freq_factor": st.one_of(st.floats(-1, 8), _SCALARS),
              "high_freq_factor": st.one_of(st.floats(-1, 8), _SCALARS),
              "original_max_position_embeddings": st.one_of(_EDGE_INTS, _SCALARS)}))


#: Values of every JSON type that parsers get wrong: a bool where an int belongs, a number
#: as a string, a float with an integral value, NaN, huge and negative numbers, containers.
EDGE_VALUES = [None, True, False, 0, -1, 1, 3, 4, 256, 2 ** 31, 2 ** 64, 1.5, 4.0, -0.0,
               float("nan"), float("inf"), "4", "", "bytes", "../../etc/passwd", "/etc/passwd",
               [], [4], [1, 300], {}, {"factor": 2}, {"rope_type": "linear"}]


def _retyped(v):
    """The same value in the other JSON types (``4`` -> ``"4"``, ``4.0``, ``True``, ``[4]``)."""
    out = [str(v), [v], {"value": v}]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        out += [float(v), bool(v), -v]
    return out


@st.composite
def mutated_dict(draw, base: dict):
    """``base`` with 1-4 keys deleted, retyped, set to an edge or a random JSON value, or
    nudged (an int changed by a little: the type stays right, the consistency breaks)."""
    d = dict(base)
    keys = sorted(set(base) | {"rope_scaling", "format_version", "tokenizer", "head_dim"})
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["delete", "random", "edge", "edge", "retype", "nudge",
                                       "nudge"]))
        v = d.get(k)
        if action == "delete":
            d.pop(k, None)
        elif action == "nudge" and isinstance(v, int) and not isinstance(v, bool):
            d[k] = draw(st.sampled_from([v - 1, v + 1, v * 2, v // 2, 0, -v]))
        elif action == "retype" and v is not None:
            d[k] = draw(st.sampled_from(_retyped(v)))
        elif action == "edge":
            d[k] = draw(st.sampled_from(EDGE_VALUES))
        elif k == "rope_scaling":
            d[k] = draw(ROPE_SCALING)
        else:
            d[k] = draw(JSON_VALUES)
    return d


@st.composite
def nudged_dict(draw, base: dict):
    """``base`` with exactly one integer field nudged: every type is right, only the
    consistency with the other fields and with the tensors is broken (the mutation a type
    check cannot catch)."""
    d = dict(base)
    k = draw(st.sampled_from(sorted(k for k, v in base.items()
                                    if isinstance(v, int) and not isinstance(v, bool))))
    d[k] = draw(st.sampled_from([d[k] - 1, d[k] + 1, d[k] * 2, d[k] // 2]))
    return d


@st.composite
def mutated_bytes(draw, base: bytes, hot: int):
    """``base`` with 1-6 byte-level mutations, half of them in the first ``hot`` bytes (the
    header, where a parser makes its decisions)."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        n = len(data)
        i = draw(st.integers(0, min(hot, n) - 1) | st.integers(0, n - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "u64",
                                   "u32"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        else:  # a length or count field replaced by an extreme value
            fmt = "<Q" if op == "u64" else "<I"
            v = draw(st.sampled_from([0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 63, 2 ** 64 - 1]) |
                     st.integers(0, 2 ** 32 - 1))
            v %= 2 ** (64 if op == "u64" else 32)
            data[i:i + struct.calcsize(fmt)] = struct.pack(fmt, v)
    return bytes(data)


def _st_header(raw: bytes):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


@st.composite
def mutated_safetensors(draw):
    """A valid file whose JSON header has entries mutated, or whose bytes are mutated."""
    if draw(st.booleans()):
        return draw(mutated_bytes(BASE_ST, hot=8 + struct.unpack("<Q", BASE_ST[:8])[0]))
    header, data = _st_header(BASE_ST)
    names = sorted(header)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        if name == "__metadata__" or draw(st.integers(0, 4)) == 0:
            header[name] = draw(JSON_VALUES)
            continue
        entry = dict(header[name]) if isinstance(header[name], dict) else {}
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[field] = draw(st.one_of(
            JSON_VALUES, st.sampled_from(["F32", "BF16", "F16", "I8", "BOOL", "F8", "f32"]),
            st.lists(st.one_of(_EDGE_INTS, st.integers(-4, 600)), max_size=4)))
        header[name] = entry
    hb = json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + data


# ------------------------------------------------------------------ checks

def _check_config(kind, d):
    parse = ModelConfig.from_sparktile if kind == "sparktile" else ModelConfig.from_hf
    c = _outcome(parse, d, "config.json")
    if c is None:
        return
    # Accepted: every field the model uses is of its type and consistent.
    for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
              "head_dim", "intermediate_size", "max_position_embeddings"):
        v = getattr(c, k)
        assert type(v) is int and v > 0, (k, v)
    assert c.num_heads % c.num_kv_heads == 0 and c.head_dim % 2 == 0
    assert type(c.tie_word_embeddings) is bool and type(c.attention_bias) is bool
    assert math.isfinite(c.rope_theta) and c.rope_theta > 0
    assert math.isfinite(c.rms_norm_eps) and 0 < c.rms_norm_eps < 1
    assert all(type(i) is int and 0 <= i < c.vocab_size for i in c.eos_token_ids)
    assert c.bos_token_id is None or 0 <= c.bos_token_id < c.vocab_size
    if c.rope_type == "linear":
        assert c.rope_scaling["factor"] > 0
    # What the file said is what the config holds (no silent defaulting of a given field).
    if kind == "sparktile":
        assert c.num_layers == d["num_layers"] and c.num_heads == d["num_heads"]
    else:
        assert c.num_layers == d["num_hidden_layers"]
        assert c.num_heads == d["num_attention_heads"]


def _check_folder(folder: Path):
    m = _outcome(load_model, folder)
    if m is None:
        return
    shapes = m.config.expected_shapes()
    assert set(m.weights) == set(shapes)
    for k, s in shapes.items():
        assert m.weights[k].shape == s and m.weights[k].dtype == np.float32
    # The layers the model runs are the layers the file holds (issue 17: num_layers 3 on a
    # 4-layer file silently ran 3).
    in_file = {int(n.split(".")[1]) for n in read_safetensors(folder / "model.safetensors")
               if n.startswith("layers.")}
    assert in_file == set(range(m.config.num_layers))


def _check_safetensors(path: Path, raw: bytes):
    t = _outcome(read_safetensors, path)
    if t is None:
        return
    total = sum(a.nbytes for a in t.values())
    assert total <= len(raw), "more tensor bytes than the file holds"


def _check_gguf(path: Path):
    r = _outcome(load_gguf, path)
    if r is None:
        return
    config, weights, tok = r
    assert set(weights) == set(config.expected_shapes())
    assert tok.vocab_size <= config.vocab_size


# ------------------------------------------------------------------ the tests, two tiers

CONFIG_INPUT = st.one_of(
    st.tuples(st.just("sparktile"), mutated_dict(BASE_CONFIG)),
    st.tuples(st.just("hf"), mutated_dict(HF_CONFIG)),
    st.tuples(st.sampled_from(["sparktile", "hf"]), JSON_VALUES))


def _write_folder(cfg, st_bytes) -> Path:
    folder = _WORK / "case"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    (folder / "model.safetensors").write_bytes(BASE_ST if st_bytes is None else st_bytes)
    return folder


FOLDER_INPUT = st.one_of(
    st.tuples(mutated_dict(BASE_CONFIG), st.none()),  # None: the valid model.safetensors
    st.tuples(nudged_dict(BASE_CONFIG), st.none()),
    st.tuples(st.just(BASE_CONFIG), mutated_safetensors()),
    st.tuples(mutated_bytes(json.dumps(BASE_CONFIG, indent=1).encode(), hot=10 ** 6)
              .map(lambda b: b.decode("latin-1")), st.none()))


def _run_config(inp):
    _check_config(*inp)


def _run_folder(inp):
    _check_folder(_write_folder(*inp))


def _run_safetensors(raw):
    path = _WORK / "x.safetensors"
    path.write_bytes(raw)
    _check_safetensors(path, raw)


def _run_gguf(raw):
    path = _WORK / "x.gguf"
    path.write_bytes(raw)
    _check_gguf(path)


GGUF_INPUT = mutated_bytes(BASE_GGUF, hot=2500)


@pytest.mark.usefixtures("memory_bound")
@DEFAULT
@given(CONFIG_INPUT)
def test_fuzz_config_parser(inp):
    _run_config(inp)


@pytest.mark.usefixtures("memory_bound")
@DEFAULT
@given(FOLDER_INPUT)
def test_fuzz_checkpoint_loader(inp):
    _run_folder(inp)


@pytest.mark.usefixtures("memory_bound")
@DEFAULT
@given(mutated_safetensors())
def test_fuzz_safetensors_reader(raw):
    _run_safetensors(raw)


@pytest.mark.usefixtures("memory_bound")
@DEFAULT
@given(GGUF_INPUT)
def test_fuzz_gguf_reader(raw):
    _run_gguf(raw)


def test_valid_inputs_load(memory_bound):
    """The unmutated inputs load: a fuzz test whose base file is broken tests nothing."""
    _check_config("sparktile", BASE_CONFIG)
    assert ModelConfig.from_hf(HF_CONFIG).num_layers == 2
    assert load_model(BASE).config.num_layers == 2
    assert len(read_safetensors(BASE / "model.safetensors")) == len(
        MICRO.expected_shapes())
    assert load_gguf(_WORK / "base.gguf")[0].num_layers == 1


@pytest.mark.usefixtures("memory_bound")
@pytest.mark.parametrize("raw", [struct.pack("<Q", 2 ** 63) + b"{}" * 8,
                                 struct.pack("<Q", 90_000_000) + b" " * 64])
def test_huge_header_claims_refused_without_allocating(raw):
    path = _WORK / "claim.safetensors"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="header claims"):
        read_safetensors(path)


# Long tier: the same properties, LONG_EXAMPLES inputs each.

@pytest.mark.fuzz
@pytest.mark.usefixtures("memory_bound")
def test_fuzz_long_config_parser():
    run_long(_run_config, CONFIG_INPUT, settings_=LONG, total=LONG_EXAMPLES)


@pytest.mark.fuzz
@pytest.mark.usefixtures("memory_bound")
def test_fuzz_long_checkpoint_loader():
    run_long(_run_folder, FOLDER_INPUT, settings_=LONG, total=LONG_EXAMPLES)


@pytest.mark.fuzz
@pytest.mark.usefixtures("memory_bound")
def test_fuzz_long_safetensors_reader():
    run_long(_run_safetensors, mutated_safetensors(), settings_=LONG, total=LONG_EXAMPLES)


@pytest.mark.fuzz
@pytest.mark.usefixtures("memory_bound")
def test_fuzz_long_gguf_reader():
    run_long(_run_gguf, GGUF_INPUT, settings_=LONG, total=LONG_EXAMPLES)

