"""The whole decoder on a core mesh (``sparktile/compiler/decoder_mapping.py``), run on the
mesh of ISSs (``sparktile/compiler/mesh_iss.py``) against the golden int path, position by
position: random small models (GQA, multi-head, Qwen2-style q/k/v biases, one and two layers),
meshes of one row, one column and both, contexts that cross worker boundaries and reach the
largest the mesh holds; and the errors for what does not fit. The same programs run on the
Verilator mesh in ``tests/test_decode_rtl.py``."""

import numpy as np
import pytest
from sparktile.cosim.benches.decode import decode_model
from sparktile.hdl.mesh import MeshShape

from sparktile.compiler.decoder_mapping import compile_decoder
from sparktile.compiler.mapping import MappingError
from sparktile.compiler.mesh_iss import MeshIss, MeshStall, decode_on_iss

SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
             intermediate_size=64, vocab_size=64)

CASES = [
    # rows, cols, sram_kb, model fields, prompt length, new tokens
    (2, 2, 32, dict(SMALL, seed=1), 3, 4),                       # GQA 2:1, 3 workers
    (1, 3, 32, dict(SMALL, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                    intermediate_size=48, vocab_size=40, seed=2), 2, 5),    # one row
    (3, 1, 32, dict(SMALL, seed=3), 4, 3),                       # one column
    (2, 3, 32, dict(SMALL, attention_bias=True, seed=4), 3, 4),  # Qwen2 q/k/v biases
    (2, 2, 32, dict(SMALL, num_heads=2, num_kv_heads=2, hidden_size=48, seed=5), 2, 3),  # MHA
]


def check_run(res, where):
    assert res["first_diff"] is None, f"{where}: {res['first_diff']}"
    assert res["tokens"] == res["golden"]
    assert res["task_errors"] == 0 and not res["dropped"], where


@pytest.mark.parametrize("rows,cols,kb,fields,n_prompt,n_new", CASES)
def test_decoder_on_iss_matches_golden(rows, cols, kb, fields, n_prompt, n_new):
    model = decode_model(random=fields)
    shape = MeshShape(rows, cols, pe="core", sram_kb=kb)
    mapping = compile_decoder(model, shape, context=n_prompt + n_new - 1)
    rng = np.random.default_rng(fields["seed"])
    ids = rng.integers(0, fields["vocab_size"], n_prompt).tolist()
    res = decode_on_iss(mapping, model, ids, n_new)
    check_run(res, f"{shape} {fields}")
    # positions beyond the number of KV workers: the cache crossed PE boundaries
    assert n_prompt + n_new - 1 > mapping.kv_workers


@pytest.mark.parametrize("context,slots,kv_workers", [(5, 1, 5), (8, 1, 8), (12, 2, 6), (17, 3, 6)])
def test_a_short_context_sits_on_the_workers_nearest_the_hub(context, slots, kv_workers):
    """A context that needs fewer workers than the mesh has goes on the ones nearest the hub
    (the attention's trees are pruned to them), on its east subtree where that holds them
    (the hub then sums one child's stream); every tile between one of them and the hub is
    one of them; every position is bit-exact, the cache wraps around those workers, and one
    more position is refused."""
    fields = dict(SMALL, num_heads=4, num_kv_heads=2, head_dim=8, seed=21)
    model = decode_model(random=fields)
    shape = MeshShape(3, 3, pe="core", sram_kb=32)
    mapping = compile_decoder(model, shape, context=context)
    assert (mapping.slots, mapping.kv_workers, mapping.max_context) == (
        slots, kv_workers, slots * kv_workers)
    assert [r + c for r, c in mapping.workers] == sorted(r + c for r, c in mapping.workers)
    kv = list(mapping.kv_tiles)
    assert len(kv) == kv_workers
    east = [t for t in mapping.workers if t[1] >= 1]
    assert kv == (east[:kv_workers] if len(east) >= kv_workers
                  else mapping.workers[:kv_workers])
    for r, c in kv:         # a prefix of a subtree: the tile towards the hub is in it too
        parent = (r - 1, c) if r else (0, c - 1)
        assert parent == (0, 0) or parent in kv, (r, c)
    res = decode_on_iss(mapping, model, [3, 7], mapping.max_context - 1)
    check_run(res, f"context {context}")
    assert len(res["tokens"]) == mapping.max_context
    with pytest.raises(MappingError, match=f"{slots} KV slots on each of {kv_workers} workers"):
        mapping.token_stream(1, mapping.max_context)
    # the key row of the last position is on worker (max_context - 1) % kv_workers
    tile, _ = mapping.kv_word(0, mapping.max_context - 1, 0)
    assert tile == kv[(mapping.max_context - 1) % kv_workers]


def test_a_pe_whose_data_pass_the_task_address_limit_is_refused_by_that_limit():
    """256 KiB a PE on an 8x1 mesh: a worker's data (its rows of every matrix) end past word
    32768, below which a program must start (a task's 15-bit entry address), though the SRAM
    has room: the error names that limit, not the SRAM's size."""
    with pytest.raises(MappingError, match=r"program must start below word 32768 \(a task's "
                                           r"entry address\)") as err:
        compile_decoder(decode_model(), MeshShape(8, 1, pe="core", sram_kb=256), context=8)
    assert "a PE has 65536" not in str(err.value)


def test_largest_context_is_filled_and_then_refused():
    """A mesh whose SRAM holds only a few slots: fill every position it reports, bit-exact;
    the next position is refused with the figures."""
    model = decode_model(random=dict(SMALL, hidden_size=16, head_dim=8, intermediate_size=32,
                                     vocab_size=32, num_layers=2, num_heads=1, seed=6))
    shape = MeshShape(3, 1, pe="core", sram_kb=16)
    mapping = compile_decoder(model, shape)
    assert 2 <= mapping.max_context <= 40, mapping.max_context
    res = decode_on_iss(mapping, model, [5], mapping.max_context)
    check_run(res, "largest context")
    assert len(res["tokens"]) == mapping.max_context
    with pytest.raises(MappingError, match=f"position {mapping.max_context} is beyond"):
        mapping.token_stream(1, mapping.max_context)
    with pytest.raises(MappingError, match=r"needs \d+ SRAM words .* largest context of this "
                                           f"mesh is {mapping.max_context}"):
        compile_decoder(model, shape, context=mapping.max_context + 2 * len(mapping.workers))


def test_the_scalar_norm_sums_go_only_where_sram_has_room():
    """A worker takes its norm sums in scalar ops (a longer program) only where its SRAM holds
    them: at one slot there is room and the programs grow; the largest context is the one a
    vector-only compile finds (one slot more does not fit even that way), so the scalar sums
    cost no context; both decodes bit-exact."""
    from sparktile.compiler import decoder_mapping as dm
    model = decode_model(random=dict(SMALL, hidden_size=16, head_dim=8, intermediate_size=32,
                                     vocab_size=32, num_layers=2, num_heads=1, seed=6))
    roomy = MeshShape(3, 1, pe="core", sram_kb=32)
    one = compile_decoder(model, roomy, context=2)            # a slot on each of 2 workers
    vector = dm._compile(model, roomy, 1, kv_workers=2, scalar_norms=False)
    assert all(one.words["per_pe"][t] > vector.words["per_pe"][t]
               for t in ("1,0", "2,0")), (one.words, vector.words)
    check_run(decode_on_iss(one, model, [5], 1), "one slot, scalar norm sums")
    shape = MeshShape(3, 1, pe="core", sram_kb=16)
    largest = compile_decoder(model, shape)
    assert largest.max_context < model.config.max_position_embeddings
    # (3 slots a worker compile in 4,076 words and 4 in 4,096 of 4,096: the search once
    # stopped at 3, extrapolating the 2-to-3 growth)
    with pytest.raises(dm._Overflow):
        dm._compile(model, shape, largest.slots + 1, scalar_norms=False)
    check_run(decode_on_iss(largest, model, [5], 2), "largest context")


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_small_configs(seed):
    """Random shapes within what the kernels take (head_dim a multiple of 8, the FFN and the
    hidden size of 4) on a random mesh."""
    rng = np.random.default_rng(seed)
    kv = int(rng.choice([1, 2]))
    heads = kv * int(rng.choice([1, 2]))
    fields = dict(hidden_size=int(rng.choice([16, 32, 48])), num_layers=int(rng.integers(1, 3)),
                  num_heads=heads, num_kv_heads=kv, head_dim=int(rng.choice([8, 16])),
                  intermediate_size=4 * int(rng.integers(4, 17)),
                  vocab_size=int(rng.integers(8, 80)), attention_bias=bool(rng.integers(2)),
                  seed=seed)
    rows, cols = [(1, 2), (2, 1), (2, 2), (1, 4), (3, 2)][seed % 5]
    model = decode_model(random=fields)
    mapping = compile_decoder(model, MeshShape(rows, cols, pe="core", sram_kb=32), context=6)
    ids = rng.integers(0, fields["vocab_size"], 2).tolist()
    check_run(decode_on_iss(mapping, model, ids, 4), f"seed {seed}: {fields} on {rows}x{cols}")


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_one_kv_slot_a_worker(seed):
    """A context no larger than the number of workers: one KV slot each, where a worker's
    ``p . v`` is its slot's probability times the slot's values (a VMUL and a VMULSR a head)
    instead of the digit GEMVs; random models, bit-exact at every position up to the
    context, and fewer cycles than the same model compiled for two slots."""
    rng = np.random.default_rng(seed)
    kv = int(rng.choice([1, 2]))
    fields = dict(hidden_size=int(rng.choice([16, 32])), num_layers=int(rng.integers(1, 3)),
                  num_heads=kv * int(rng.choice([1, 2])), num_kv_heads=kv,
                  head_dim=int(rng.choice([8, 16])), intermediate_size=4 * int(rng.integers(4, 9)),
                  vocab_size=int(rng.integers(8, 60)), attention_bias=bool(rng.integers(2)),
                  seed=seed)
    rows, cols = [(2, 3), (3, 2), (1, 4)][seed % 3]
    workers = rows * cols - 1
    model = decode_model(random=fields)
    shape = MeshShape(rows, cols, pe="core", sram_kb=32)
    one = compile_decoder(model, shape, context=workers)
    assert one.slots == 1
    ids = rng.integers(0, fields["vocab_size"], 2).tolist()
    res = decode_on_iss(one, model, ids, workers - 1)
    check_run(res, f"seed {seed}: {fields} on {shape}, one slot")
    assert len(res["tokens"]) == workers
    two = decode_on_iss(compile_decoder(model, shape, context=workers + 1), model, ids, 1)
    check_run(two, f"seed {seed}: two slots")
    assert res["by_op"][0]["weighted_sum"] < two["by_op"][0]["weighted_sum"]


def test_shipped_model_on_8x8_one_token():
    model = decode_model()
    mapping = compile_decoder(model, MeshShape(8, 8, pe="core", sram_kb=64))
    assert len(mapping.workers) == 63 and mapping.slots >= 5
    assert mapping.max_context == min(63 * mapping.slots, 512)   # 512: the model's positions
    # beyond it: refused by the SRAM (the largest context named) or, once the mesh holds all
    # of the model's positions, by the model
    limit = (f"largest context of this mesh is {mapping.max_context}"
             if mapping.max_context < 512 else "exceeds the model's max_position_embeddings")
    with pytest.raises(MappingError, match=limit):
        compile_decoder(model, MeshShape(8, 8, pe="core", sram_kb=64),
                        context=63 * (mapping.slots + 1))
    check_run(decode_on_iss(mapping, model, [10], 2), "shipped model, 8x8")


def test_errors_name_the_problem():
    model = decode_model(random=dict(SMALL, seed=1))
    with pytest.raises(MappingError, match="at least 2 PEs"):
        compile_decoder(model, MeshShape(1, 1, pe="core"))
    with pytest.raises(MappingError, match="pe='core'"):
        compile_decoder(model, MeshShape(2, 2))
    with pytest.raises(MappingError, match=r"PE \(0,1\) needs \d+ SRAM words .* 4096 \(16 KiB\)"):
        compile_decoder(model, MeshShape(1, 2, pe="core", sram_kb=16))
    with pytest.raises(MappingError, match=r"PE \(0,0\) \(the hub\) needs \d+ SRAM words "
                                           r"\(the norm"):
        compile_decoder(decode_model(), MeshShape(8, 8, pe="core", sram_kb=4))
    with pytest.raises(MappingError, match="exceeds the model's max_position_embeddings"):
        compile_decoder(model, MeshShape(2, 2, pe="core"), context=10_000)
    with pytest.raises(MappingError, match="positive integer"):
        compile_decoder(model, MeshShape(2, 2, pe="core"), context=0)
    dyn = decode_model(random=dict(SMALL, seed=1))
    dyn.set_act_scales("dynamic")
    with pytest.raises(MappingError, match="static scales only"):
        compile_decoder(dyn, MeshShape(2, 2, pe="core"))
    odd = decode_model(random=dict(SMALL, head_dim=12, seed=1))
    with pytest.raises(MappingError, match="head_dim 12 must be a multiple of 8"):
        compile_decoder(odd, MeshShape(2, 2, pe="core"))


def test_a_missing_route_stalls_and_names_the_waiting_pe():
    """The mesh model is not a rubber stamp: drop the broadcast route into one worker and the
    run stops naming it and the color it waits on."""
    model = decode_model(random=dict(SMALL, seed=1))
    mapping = compile_decoder(model, MeshShape(2, 2, pe="core", sram_kb=32), context=4)
    del mapping.program.routes[1, 1][2]          # color B into (1,1)
    mesh = MeshIss(mapping.program)
    pay, ccs = mapping.token_stream(1, 0)
    mesh.inject("N", 0, pay, ccs)
    with pytest.raises(MeshStall, match=r"PE \(1, 1\) at pc \d+ waits for \{2: \d+\}"):
        mesh.run()


def test_every_op_taps_match_and_a_kv_fault_is_named():
    """With taps, every vector the hub holds equals the golden trace; a flipped sign bit of a
    key lane in layer 0 at position 2 (its worker's SRAM, between two tokens) is named at the
    next position as layer 0's attention sum."""
    model = decode_model(random=dict(SMALL, num_layers=2, seed=7))
    mapping = compile_decoder(model, MeshShape(2, 2, pe="core", sram_kb=32), context=6,
                              taps=True)
    assert [t.name for t in mapping.taps[:5]] == ["attn_norm", "q", "k", "v", "q_rope"]
    assert mapping.taps[-1].name == "logits"
    check_run(decode_on_iss(mapping, model, [3, 1, 4], 3), "taps")

    def flip(mesh, pos):
        if pos == 2:
            tile, addr = mapping.kv_word(0, 2, 1)
            mesh.pes[tile].sram[addr] ^= 1 << 15
    res = decode_on_iss(mapping, model, [3, 1, 4, 1, 5], 1, after=flip)
    d = res["first_diff"]
    assert (d["layer"], d["op"], d["position"]) == (0, "attn_sum", 3), d
    assert d["got"] != d["expected"]


@pytest.mark.parametrize("word", [0, 3])
def test_a_kv_fault_in_either_kv_groups_keys_is_named(word):
    """The key cache is kept by kv group (a head's score GEMV reads only its group's rows):
    :meth:`kv_word` finds a key word of either group, at several slots a worker; its flipped
    sign bit is named at the next position as layer 0's attention sum."""
    model = decode_model(random=dict(SMALL, num_heads=4, num_kv_heads=2, head_dim=8, seed=8))
    mapping = compile_decoder(model, MeshShape(2, 2, pe="core", sram_kb=32), context=7,
                              taps=True)
    assert mapping.slots > 1 and mapping.layout[mapping.kv_tiles[0]]["kc_group_words"] == 2

    tile, addr = mapping.kv_word(0, 4, word)
    seen = {}

    def flip(mesh, pos):
        seen[pos] = int(mesh.pes[tile].sram[addr])
        if pos == 4:
            mesh.pes[tile].sram[addr] ^= 1 << 31
    res = decode_on_iss(mapping, model, [3, 1, 4, 1, 5, 9], 1, after=flip)
    # the word is position 4's: zero until it was appended (its slot's first position)
    assert seen[3] == 0 and seen[4] != 0, seen
    d = res["first_diff"]
    assert (d["layer"], d["op"], d["position"]) == (0, "attn_sum", 5), d


def test_random_models_and_meshes_compile_or_are_refused_clearly():
    """Seeded random model shapes (some the kernels do not take), meshes, SRAM sizes and
    contexts: each compiles (and then fits its SRAM and reports a context it can hold) or
    raises MappingError naming a value; nothing else escapes."""
    from sparktile.golden_model.errors import GenerationError
    rng = np.random.default_rng(2026)
    outcomes = {"compiled": 0, "refused": 0}
    for _ in range(24):
        kv = int(rng.choice([1, 2]))
        fields = dict(hidden_size=int(rng.choice([12, 16, 32, 48, 300])),
                      num_layers=int(rng.integers(1, 3)), num_kv_heads=kv,
                      num_heads=kv * int(rng.choice([1, 2])),
                      head_dim=int(rng.choice([4, 8, 12, 16])),
                      intermediate_size=int(rng.choice([30, 32, 64])),
                      vocab_size=int(rng.choice([16, 64, 300])),
                      attention_bias=bool(rng.integers(2)), seed=int(rng.integers(100)))
        try:
            model = decode_model(random=fields)
            model.int_params()
        except (GenerationError, ValueError):
            continue                       # the golden model refuses the config itself
        shape = MeshShape(int(rng.integers(1, 4)), int(rng.integers(1, 4)), pe="core",
                          sram_kb=int(rng.choice([4, 16, 64])))
        context = None if rng.random() < 0.5 else int(rng.integers(1, 300))
        try:
            mapping = compile_decoder(model, shape, context)
        except MappingError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            outcomes["refused"] += 1
            continue
        outcomes["compiled"] += 1
        assert mapping.words["max"] <= shape.sram_words
        assert 1 <= mapping.max_context and (context is None or mapping.max_context >= context)
    assert outcomes["compiled"] >= 2 and outcomes["refused"] >= 2, outcomes


@pytest.mark.parametrize("rows,cols,fields,ids,n_new,sampling", [
    (2, 3, dict(SMALL, seed=1), [3, 7, 9], 5, dict(temperature=1.0, top_k=20, top_p=0.95)),
    (3, 1, dict(SMALL, attention_bias=True, vocab_size=40, seed=3), [5, 2], 4,
     dict(temperature=0.7, top_k=None, top_p=None)),
])
def test_sampling_the_fabric_logits_matches_golden_generate(rows, cols, fields, ids, n_new,
                                                            sampling):
    """With a sampling host the hub sends every position's logits (compared element by
    element), and the tokens the host draws from them are those of the golden model's own
    ``generate(mode="int", seed=...)``."""
    from sparktile.compiler.decoder_mapping import HostSampler
    model = decode_model(random=fields)
    mapping = compile_decoder(model, MeshShape(rows, cols, pe="core", sram_kb=32),
                              context=len(ids) + n_new, logits=True)
    assert mapping.on_host == ("sampling",) and "argmax" not in mapping.on_fabric
    assert mapping.out_words == fields["vocab_size"]
    res = decode_on_iss(mapping, model, ids, n_new, sampler=HostSampler(**sampling, seed=11))
    check_run(res, "sampled")
    gen = model.generate(ids, n_new, mode="int", seed=11, stop_at_eos=False, **sampling)
    assert res["tokens"][len(ids) - 1:] == gen.token_ids
    # a different seed draws other tokens from the same logits (the draw is really random)
    other = decode_on_iss(mapping, model, ids, n_new, sampler=HostSampler(**sampling, seed=12))
    assert other["first_diff"] is None and other["tokens"] != res["tokens"]


def test_differing_logits_are_named_by_element():
    """A head weight flipped on one worker after compiling: the position's logits differ, and
    the report names the first differing vocabulary entry, both values and the position."""
    from sparktile.compiler.decoder_mapping import HostSampler
    model = decode_model(random=dict(SMALL, seed=1))
    mapping = compile_decoder(model, MeshShape(2, 2, pe="core", sram_kb=32), context=4,
                              logits=True)
    tile, (base, row) = next((t, lay["head_w"]) for t, lay in mapping.layout.items()
                             if lay.get("head_w"))
    mapping.program.write_sram(*tile, base, [0x7F7F7F7F])     # row `row`'s first 4 weights
    res = decode_on_iss(mapping, model, [1, 2], 2, sampler=HostSampler(1.0, seed=3))
    d = res["first_diff"]
    assert d is not None and (d["op"], d["position"], d["element"]) == ("logits", 0, row), d
    assert d["got"] != d["expected"]


def test_host_sampler_refuses_greedy():
    from sparktile.compiler.decoder_mapping import HostSampler
    with pytest.raises(ValueError, match="temperature > 0"):
        HostSampler(0.0)


def test_a_slot_more_keeps_the_kv_workers_on_one_stream():
    """Where the fewest workers at the needed slots spill out of the hub's east subtree (two
    streams of attention sums at the hub), the compiler takes one slot more on fewer workers
    when that slot adds no word of padded slots: the KV cache then sits on the east subtree,
    every position is bit-exact, and a token costs fewer cycles than on two streams."""
    from sparktile.compiler.decoder_mapping import _compile
    fields = dict(SMALL, num_heads=4, num_kv_heads=2, head_dim=8, seed=31)
    model = decode_model(random=fields)
    shape = MeshShape(3, 3, pe="core", sram_kb=32)
    mapping = compile_decoder(model, shape, context=14)       # 2 slots would need 7 workers
    assert (mapping.slots, mapping.kv_workers) == (3, 5)
    assert all(c >= 1 for _, c in mapping.kv_tiles)
    ids = [3, 7, 1]
    res = decode_on_iss(mapping, model, ids, 14 - len(ids) + 1)
    check_run(res, "one stream")
    two = _compile(model, shape, 2, kv_workers=7)
    assert any(c == 0 for _, c in two.kv_tiles)
    res2 = decode_on_iss(two, model, ids, 14 - len(ids) + 1)
    check_run(res2, "two streams")
    assert sum(res["token_cycles"]) < sum(res2["token_cycles"])
    # a context whose next slot count pads to another word keeps its own (2 -> 3 slots is
    # one word of four; 4 -> 5 would be two)
    kept = compile_decoder(model, MeshShape(3, 3, pe="core", sram_kb=32), context=25)
    assert kept.slots == 4 and kept.kv_workers == 7
