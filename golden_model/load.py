"""``load_model``: one entry point for every checkpoint kind.

=========================================  ===============================================
``path_or_name``                           loads
=========================================  ===============================================
``None``, ``"default"``,                   the shipped model from the package's ``data/``
``"sparktile-code-tiny"``
a ``.gguf`` file                           :func:`~sparktile.golden_model.gguf_loader.load_gguf`
a folder whose ``config.json`` has         the project format
``"format": "sparktile-llama"``
a folder whose ``config.json`` has         a Hugging Face Llama / Qwen2 folder
``"model_type"``
=========================================  ===============================================
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import load_hf_folder, load_sparktile_folder, read_config
from .errors import CheckpointError, CheckpointNotFound
from .gguf_loader import load_gguf
from .model import Model
from .paths import expand_home

__all__ = ["DEFAULT_MODEL", "DATA_DIR", "load_model"]

#: Name of the shipped model.
DEFAULT_MODEL = "sparktile-code-tiny"
#: Folder of the shipped model (package data).
DATA_DIR = Path(__file__).resolve().parent / "data"


def load_model(path_or_name=None) -> Model:
    """Load a model: the shipped one, a project folder, a Hugging Face folder or a GGUF file.

    Parameters
    ----------
    path_or_name : str or os.PathLike, optional
        See the module docstring; None means the shipped model.

    Returns
    -------
    Model

    Raises
    ------
    CheckpointNotFound
        If the path does not exist or a folder lacks ``config.json`` (a
        :class:`FileNotFoundError` too).
    CheckpointError
        If the checkpoint is malformed: the message names the file, the field or tensor and
        what is allowed (a :class:`ValueError` and a :class:`sparktile.errors.UserError`, so
        the CLI prints it as one line).
    """
    if path_or_name is None or str(path_or_name) in ("default", DEFAULT_MODEL):
        path = DATA_DIR
    else:
        path = expand_home(path_or_name)
    if not path.exists():
        raise CheckpointNotFound(f"no model at {path} (expected a .gguf file, a checkpoint "
                                 f"folder, or 'default')")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise CheckpointError(f"{path}: a model file must be .gguf; for safetensors "
                                  "checkpoints pass the folder holding config.json")
        config, weights, tok = load_gguf(path)
    else:
        cfg = path / "config.json"
        if not cfg.exists():
            raise CheckpointNotFound(f"{path}: no config.json in this folder")
        raw = read_config(path)
        if raw.get("format") == "sparktile-llama":
            config, weights, tok = load_sparktile_folder(path)
        elif "model_type" in raw:
            config, weights, tok = load_hf_folder(path)
        else:
            raise CheckpointError(f"{cfg}: neither a sparktile checkpoint ('format': "
                                  "'sparktile-llama') nor a Hugging Face one ('model_type')")
    return Model(config, weights, tok, source=str(path))
