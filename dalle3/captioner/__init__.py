"""The CoCa captioner: open_clip's CoCa, pretrained on alt-text, fine-tuned on SSC/DSC.

Files, by role (STYLE.md rule 1):

* ``tokenizer.py``: word-level tokenizer sized to the synthetic world (open_clip interface);
* ``model.py``: builds the open_clip ``CoCa`` from config (+ the open_clip 3.3.0 init fix);
* ``stem.py``: the optional conv stem that replaces the ViT's patch embedding;
* ``kv.py``, ``decoding.py``, ``generate.py``, ``beam.py``: our KV-cached decoder on open_clip
  weights (``decoding.py``: the pieces shared by greedy/sampling in ``generate.py`` and beam
  search in ``beam.py``);
* ``losses.py``: λ_con · contrastive + λ_cap · caption (open_clip's ``CoCaLoss``);
* ``module.py``: ``CaptionerModule``, the LightningModule;
* ``caption_samples.py``: callback logging validation captions beside the ground truth;
* ``export.py``: safetensors + model config, loadable by ``open_clip.create_model``
  (with a conv stem: by ``load_exported``, which calls it and adds the stem); ``layout.py``:
  the export folder's file names;
* ``evaluate.py``: caption vs. scene-graph fact recall / false rate;
* ``stage.py``: ``run_captioner_pretrain`` / ``run_captioner_finetune``, behind
  ``stage=captioner_pretrain|captioner_finetune``.

Nothing is imported here, so ``model.py``/``generate.py`` users never pull in Lightning.
"""
