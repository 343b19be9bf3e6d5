"""The virtual board: the FPGA top (mesh, host bridge, UART) in Verilator, driven by the host
driver through a bit-level UART model — the same bytes a board's USB-UART would carry.

Checks the GEMV result against the golden model, and the bridge's error handling: a bad CRC
is answered with an error frame, garbage before a frame is skipped, a frame missing a byte is
rejected (timeout error frame) while the next frame works, and a board that does not answer
raises a timeout naming the port. The simulator is built once per configuration and cached
(``~/.cache/sparktile/vboard``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sparktile.cosim.benches.gemv import random_problem
from sparktile.cosim.board.host import (
    Board,
    BoardTimeout,
    BridgeError,
    SimTransport,
    Transport,
)
from sparktile.golden_model.arith import matmul_int8, requantize
from sparktile.hdl.fpga.protocol import Cmd, ErrorCode, encode_frame, port_code
from sparktile.hdl.mesh import MeshShape

from sparktile.compiler.mapping import compile_gemv

#: The ULX3S configuration (2x2, 16 KiB per PE), so the CLI demo shares the cached build.
SHAPE = MeshShape(2, 2, sram_kb=16, acc_depth=256, link_regs=True)  # as on the boards


@pytest.fixture(scope="module")
def board():
    with SimTransport(SHAPE) as t:
        b = Board(t, timeout=5.0)
        b.ping()
        yield b


def golden(w, x, mult, shift):
    return requantize(matmul_int8(w, x.T), mult[:, None], shift[:, None]).T


def test_ping_describes_the_board(board):
    info = board.ping()
    assert (info["rows"], info["cols"], info["sram_kb"], info["acc_depth"]) == (2, 2, 16, 256)
    assert info["version"] == 1 and info["divisor"] == 4
    # PING reports the geometry the host maps onto; the FPGA options are not part of it.
    assert board.shape() == MeshShape(2, 2, sram_kb=16, acc_depth=256)


@pytest.mark.parametrize("m,n,batch,seed", [(32, 64, 1, 1), (50, 100, 3, 7)])
def test_gemv_on_the_virtual_board_equals_the_golden_model(board, m, n, batch, seed):
    w, x, mult, shift = random_problem(m, n, batch, seed)
    mapping = compile_gemv(SHAPE, w, mult, shift)
    y = board.gemv(mapping, x)
    np.testing.assert_array_equal(y, golden(w, x, mult, shift), err_msg=f"seed {seed}")
    st = board.status()
    assert st["crc_errors"] == 0 and st["stall_aborts"] == 0


def test_int32_gemv_and_counters(board):
    w, x, mult, shift = random_problem(20, 36, 2, 5)
    mapping = compile_gemv(SHAPE, w, mult, shift, out_int32=True)
    y = board.gemv(mapping, x)
    np.testing.assert_array_equal(y, matmul_int8(w, x.T).T)
    c = board.read_counters(SHAPE)
    assert (c["task_errors"] == 0).all() and (c["cfg_errors"] == 0).all()
    assert (c["cycles"] > 0).all()


def test_bad_crc_is_answered_with_an_error_frame(board):
    before = board.status()
    frame = bytearray(encode_frame(Cmd.WRITE, bytes([port_code("W", 0)]) + bytes(5)))
    frame[-1] ^= 0x01
    with pytest.raises(BridgeError) as exc:
        board.request(Cmd.WRITE, raw=bytes(frame))
    assert exc.value.code == ErrorCode.BAD_CRC
    assert "BAD_CRC" in str(exc.value)
    after = board.status()
    assert after["crc_errors"] == before["crc_errors"] + 1
    assert board.ping()["rows"] == 2          # the link still works


def test_garbage_before_a_frame_is_skipped(board):
    before = board.status()
    garbage = bytes([0x00, 0xFF, 0x13, 0xA5, 0x00, 0xA5, 0xA5, 0x77])
    reply = board.request(Cmd.PING, raw=garbage + encode_frame(Cmd.PING))
    assert reply[:2] == b"ST"
    assert board.status()["garbage_bytes"] >= before["garbage_bytes"] + 6


def test_a_dropped_byte_rejects_that_frame_and_the_next_one_works(board):
    before = board.status()
    # Three READ headers into row 0: executed, they would put responses on the east edge.
    from sparktile.compiler.program import read_requests
    pay, ccs = read_requests(SHAPE)[0]
    raw = np.zeros((3, 5), np.uint8)
    raw[:, 0:4] = pay[:3].view(np.uint8).reshape(3, 4)
    raw[:, 4] = ccs[:3]
    frame = encode_frame(Cmd.WRITE, bytes([port_code("W", 0)]) + raw.tobytes())
    damaged = frame[:9] + frame[10:]
    with pytest.raises(BridgeError) as exc:
        board.request(Cmd.WRITE, raw=damaged)
    assert exc.value.code == ErrorCode.TIMEOUT
    after = board.status()
    assert after["timeouts"] == before["timeouts"] + 1
    assert after["east_level"] == 0             # nothing of the damaged frame executed
    assert board.ping()["rows"] == 2


def test_a_dropped_byte_followed_by_a_frame_is_rejected_then_the_link_recovers(board):
    frame = encode_frame(Cmd.STATUS)
    with pytest.raises(BridgeError) as exc:
        board.request(Cmd.STATUS, raw=frame[:4] + frame[5:] + encode_frame(Cmd.PING))
    assert exc.value.code in (ErrorCode.BAD_CRC, ErrorCode.TIMEOUT, ErrorCode.BAD_LEN)
    board.resync()
    assert board.ping()["rows"] == 2


@pytest.mark.parametrize("cmd,payload,code", [
    (0x55, b"", ErrorCode.BAD_CMD),
    (Cmd.WRITE, bytes([port_code("N", 5)]) + bytes(5), ErrorCode.BAD_ARG),   # no column 5
    (Cmd.WRITE, bytes([0]) + bytes(4), ErrorCode.BAD_ARG),                   # not 5 bytes
    (Cmd.READ, b"\x01", ErrorCode.BAD_ARG),
])
def test_bad_requests_are_answered_with_error_codes(board, cmd, payload, code):
    with pytest.raises(BridgeError) as exc:
        board.request(cmd, payload)
    assert exc.value.code == code


def test_a_frame_longer_than_the_buffer_is_refused(board):
    head = encode_frame(Cmd.WRITE, bytes(2000))[:5]       # LEN = 2000 > 1024
    with pytest.raises(BridgeError) as exc:
        board.request(Cmd.WRITE, raw=head)
    assert exc.value.code == ErrorCode.BAD_LEN
    assert board.ping()["rows"] == 2


class _Silent(Transport):
    """A board that never answers (unprogrammed, wrong port, wrong baud rate)."""

    name = "/dev/ttyUSB9"

    def write(self, data):
        pass

    def read(self, n, timeout):
        time.sleep(min(timeout, 0.05))
        return b""


def test_a_board_that_does_not_answer_raises_a_clear_timeout():
    b = Board(_Silent(), timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as exc:
        b.ping()
    assert isinstance(exc.value, BoardTimeout)
    assert "/dev/ttyUSB9" in str(exc.value) and "0.2 s" in str(exc.value)
    assert time.monotonic() - t0 < 2.0


def test_the_cli_demo_runs_on_the_virtual_board(tmp_path):
    """`sparktile fpga demo --port sim`: the same host code a real board gets."""
    import json

    from click.testing import CliRunner

    from sparktile.cli import main
    out = tmp_path / "demo.json"
    r = CliRunner().invoke(main, ["fpga", "demo", "--port", "sim", "--no-llm", "--m", "48",
                                  "--n", "80", "--batch", "2", "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["ok"] and report["gemv"]["match"]
    assert report["board"]["rows"] == 2 and report["status"]["crc_errors"] == 0



def test_the_cli_demo_on_the_icebreaker_skips_an_llm_that_cannot_fit(tmp_path):
    # The iCEBreaker's 1x1 mesh of 4 KiB runs its own GEMV size; the shipped model's matrices
    # do not fit it, which the demo says (naming the matrix) instead of failing.
    import json

    from click.testing import CliRunner

    from sparktile.cli import main
    out = tmp_path / "demo.json"
    r = CliRunner().invoke(main, ["fpga", "demo", "--port", "sim", "--board", "icebreaker",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["ok"] and report["gemv"]["match"] and report["gemv"]["m"] == 32
    assert "does not fit the 1x1 mesh" in r.output and "skipped" in report["llm"]


@pytest.mark.fpga
def test_one_llm_token_on_the_virtual_board_equals_the_numpy_backend(board):
    """The shipped model's int8 path with all 29 matmuls on the virtual board (~3 minutes:
    every matmul's weights cross the simulated UART), so not in CI (`pytest -m fpga`)."""
    from sparktile.cosim.board.demo import llm_token
    result = llm_token(board, SHAPE, echo=lambda s: None)
    assert result["match"], result
    assert result["matmuls"] == 29


def test_the_icebreaker_configuration_in_the_virtual_board():
    # The iCEBreaker's FPGA top: 1x1 small tile (4 KiB, 64 accumulators, 8 colors, 16-bit
    # counters) and its bridge (256-byte frames, 64-entry east FIFO, 16-bit STATUS counters).
    from sparktile.hdl.fpga.boards import get_board
    spec = get_board("icebreaker")
    shape = spec.shape()
    with SimTransport(shape, **spec.vboard_bridge()) as t:
        b = Board(t, timeout=5.0)
        info = b.ping()
        assert (info["rows"], info["cols"], info["sram_kb"], info["acc_depth"]) == (1, 1, 4, 64)
        w, x, mult, shift = random_problem(40, 60, 2, 17)
        y = b.gemv(compile_gemv(shape, w, mult, shift), x)
        np.testing.assert_array_equal(y, golden(w, x, mult, shift), err_msg="seed 17")
        st = b.status()
        # 16-bit counters: the two upper bytes of every STATUS field are zero.
        assert all(0 <= v < 1 << 16 for v in st.values()), st
        assert st["frames_ok"] > 0 and st["crc_errors"] == 0, st
