"""File names inside a captioner export folder: the one place they are spelled.

A module of its own so that :mod:`dalle3.captioner.model` (which resolves an export
folder to its weights file) and :mod:`dalle3.captioner.export` (which writes and reads
the folder, and depends on the model module) both import it one way.
"""
from __future__ import annotations

WEIGHTS_FILE = "open_clip_model.safetensors"
"The ``CoCa`` state dict (safetensors)."
CONFIG_FILE = "open_clip_config.json"
"""``{"model_cfg", "preprocess_cfg"}``, what ``open_clip.create_model("local-dir:<folder>")`` reads."""
TOKENIZER_FILE = "tokenizer.json"
"Our word-level vocabulary (absent for open_clip's BPE tokenizer)."
META_FILE = "captioner.json"
"Model name, tokenizer kind, conv stem and free-form metadata; its presence marks a folder as an export."
