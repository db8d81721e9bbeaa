"""One set of captioner step counts: `make demo` trains what benchmarks/caption_quality.py measures."""
from __future__ import annotations

from dalle3.config import compose


def test_the_demo_and_the_quality_benchmark_train_the_captioners_alike():
    stages = {"pretrain": ["stage=captioner_pretrain"], "ssc": ["stage=captioner_finetune", "captioner.target=ssc"],
              "dsc": ["stage=captioner_finetune", "captioner.target=dsc"]}
    for name, overrides in stages.items():
        demo = compose(overrides)
        bench = compose([*overrides, "experiment=captioner_quality"])
        assert demo.trainer.max_steps == bench.trainer.max_steps
        for key in ("data.global_batch_size", "captioner.lr", "captioner.warmup_steps", "captioner.trim_text",
                    "captioner.min_lr_ratio"):
            node_d, node_b = demo, bench
            for part in key.split("."):
                node_d, node_b = node_d[part], node_b[part]
            assert node_d == node_b, key
    assert [compose(o).trainer.max_steps for o in stages.values()] == [150, 100, 2450]
    assert compose(["stage=captioner_finetune", "captioner.finetune_steps.dsc=7"]).trainer.max_steps == 7
