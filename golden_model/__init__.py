"""Golden model of the code LLM: the PE arithmetic and a numpy Llama-family decoder.

* :mod:`.arith` — the PE's integer arithmetic, defined once.
* :mod:`.backend` — :class:`MatmulOp` and the matmul backends (the dispatch point).
* :mod:`.model` — the decoder (float32 and int8 paths, KV cache, generation).
* :mod:`.quant` — weight/activation quantization and calibration.
* :mod:`.load` — :func:`load_model` for the shipped model, project and Hugging Face
  folders, and GGUF files (:mod:`.checkpoint`, :mod:`.gguf_loader`); everything they
  refuse is a :class:`~.errors.CheckpointError` (:mod:`.errors`).

Usage::

    from sparktile.golden_model import load_model
    model = load_model()                      # the shipped sparktile-code-tiny
    model.logits(model.tokenizer.encode("def f(x):"), mode="int8")
    print(model.generate("def fib(n):", 64, mode="int8").text)
"""

from .backend import MatmulOp, NumpyBackend
from .errors import CheckpointError, CheckpointNotFound, DataError
from .load import load_model
from .model import Generation, Model

__all__ = ["load_model", "Model", "Generation", "MatmulOp", "NumpyBackend", "CheckpointError",
           "CheckpointNotFound", "DataError"]
