"""The CoCa captioner (issue #3): open_clip's CoCa, pretrained on alt-text, fine-tuned on SSC/DSC.

Files, by role (STYLE.md rule 1):

* ``tokenizer.py``: word-level tokenizer sized to the synthetic world (open_clip interface);
* ``model.py``: builds the open_clip ``CoCa`` from config (+ the open_clip 3.3.0 init fix);
* ``stem.py``: the optional conv stem that replaces the ViT's patch embedding;
* ``kv.py``, ``generate.py``, ``beam.py``: our KV-cached decoder on open_clip weights
  (greedy, beam search, sampling);
* ``losses.py``: λ_con · contrastive + λ_cap · caption (open_clip's ``CoCaLoss``);
* ``module.py``: ``CaptionerModule``, the LightningModule;
* ``caption_samples.py``: callback logging validation captions beside the ground truth;
* ``export.py``: safetensors + model config, loadable by ``open_clip.create_model``
  (with a conv stem: by ``load_exported``, which calls it and adds the stem);
* ``evaluate.py``: caption vs. scene-graph fact recall / false rate;
* ``train.py``: ``run(cfg)`` behind ``stage=captioner_pretrain|captioner_finetune``.

Nothing is imported here, so ``model.py``/``generate.py`` users never pull in Lightning.
"""
