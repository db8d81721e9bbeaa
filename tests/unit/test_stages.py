"""The stage registry and the layout rules of ARCHITECTURE.md, checked against the tree."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from dalle3.config import compose
from dalle3.config.schema import RootConfig
from dalle3.stages import RENAMED, STAGES, get_stage

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "dalle3"
SHARED = ("config", "data", "dist", "utils", "world", "callbacks")
STAGE_PACKAGES = ("captioner", "recaption", "ldm", "eval")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_resolves_to_its_package_config_group_and_entry_function(name):
    stage = STAGES[name]
    assert (PKG / stage.package / "stage.py").is_file()
    fn = stage.load()
    assert callable(fn) and fn.__name__ == f"run_{name}" and fn.__module__ == f"dalle3.{stage.package}.stage"
    assert (ROOT / "conf" / "stage" / f"{name}.yaml").is_file()
    assert (ROOT / "conf" / stage.package).is_dir()  # the package's own config group
    assert stage.package in RootConfig.__dataclass_fields__  # ... and its typed section
    assert compose([f"stage={name}"]).stage == name


def test_each_package_has_one_entry_file_and_every_run_function_is_a_stage():
    for pkg in sorted({s.package for s in STAGES.values()}):
        tree = ast.parse((PKG / pkg / "stage.py").read_text())
        runs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("run_")}
        assert runs == {f"run_{s.name}" for s in STAGES.values() if s.package == pkg}
    leftovers = [p.name for p in PKG.glob("*/*.py") if p.stem in ("train", "job_entry", "run", "precompute")]
    assert leftovers == []


def test_old_stage_name_runs_the_new_stage_with_a_deprecation_line(caplog):
    assert RENAMED == {"data": "world"}
    with caplog.at_level(logging.WARNING, logger="dalle3"):
        logging.getLogger("dalle3").propagate = True
        try:
            assert get_stage("data") is STAGES["world"]
        finally:
            logging.getLogger("dalle3").propagate = False
    assert "stage=data is deprecated; use stage=world" in caplog.text
    with pytest.raises(KeyError, match="choose one of: world"):
        get_stage("wrold")


def _imports(path: Path) -> set[str]:
    """Every ``dalle3.<package>`` a module imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        out |= {n.split(".")[1] for n in names if n.startswith("dalle3.") and n.count(".") >= 1}
    return out


def test_shared_layer_imports_no_stage_and_ldm_and_captioner_do_not_import_each_other():
    for pkg in SHARED:
        for path in (PKG / pkg).glob("*.py"):
            assert not _imports(path) & set(STAGE_PACKAGES), f"{path.relative_to(ROOT)} imports a stage package"
    for a, b in (("ldm", "captioner"), ("captioner", "ldm")):
        for path in (PKG / a).glob("*.py"):
            assert b not in _imports(path), f"{path.relative_to(ROOT)} imports dalle3.{b}"


def test_model_files_import_no_lightning_deepspeed_or_torch_distributed():
    for path in PKG.glob("*/model.py"):
        text = path.read_text()
        for banned in ("lightning", "deepspeed", "torch.distributed"):
            assert f"import {banned}" not in text and f"from {banned}" not in text, (path, banned)
