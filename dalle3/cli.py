"""Console entry points: thin Hydra mains over :mod:`dalle3.stages`.

Every command composes the same root config (``conf/config.yaml``); each one only
chooses a default ``stage=`` and refuses stages that belong to another command.
``dalle3-data`` is the old name of ``dalle3-world`` and still works, with a warning.
"""
from __future__ import annotations

import json
import sys
from typing import Iterable, Mapping, Optional

import hydra
from omegaconf import DictConfig

from dalle3.config import CONF_DIR, ConfigError, register_configs
from dalle3.stages import RENAMED, run_stage
from dalle3.utils.logging import get_logger

log = get_logger("dalle3.cli")
register_configs()


def _dispatch(cfg: DictConfig, allowed: Iterable[str], command: str) -> dict:
    allowed = tuple(allowed)
    if RENAMED.get(cfg.stage, cfg.stage) not in allowed:
        raise ConfigError(f"stage={cfg.stage!r} is not run by {command}; choose one of: {' | '.join(allowed)}")
    summary = run_stage(cfg)
    if summary:
        # One write() per line: ranks share stdout, and a separate newline write lets
        # another rank's output land in the middle of the JSON line.
        sys.stdout.write(json.dumps({"stage": cfg.stage, **summary}, default=str) + "\n")
        sys.stdout.flush()
    return summary


GENERATE_ALIASES = {k: f"ldm.generate.{k}" for k in ("prompt", "n", "guidance", "steps", "seed")}
"`dalle3-generate prompt=... n=... guidance=... steps=... seed=...`: short names of ldm.generate.*."


UPSAMPLE_FLAG = {"upsample": "upsample.enabled"}
"`dalle3-generate ... upsample=true`, `dalle3-eval ... upsample=true`: the flag; `upsample=<preset>` still picks conf/upsample/."


def expand_flags(args: list[str], flags: Mapping[str, str]) -> list[str]:
    """``key=true|false`` for a key of ``flags`` becomes ``flags[key]=value``; other values pass through
    (``upsample=qwen2.5-1.5b-instruct`` is still the config group choice)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        out.append(f"{flags[key]}={value}" if sep and key in flags and value.lower() in ("true", "false") else arg)
    return out


REPORT_ALIASES = {"": "eval.out_dir"}
"`dalle3-report DIR`: the positional argument is the evaluation folder."


def expand_aliases(args: list[str], aliases: Mapping[str, str]) -> list[str]:
    """``key=value`` arguments whose key is an alias become ``aliases[key]=value``; with an
    alias for ``""``, a bare argument (no ``=``, not an option) becomes ``aliases[""]=argument``."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in aliases:
            out.append(f"{aliases[key]}={value}")
        elif not sep and "" in aliases and not arg.startswith("-"):
            out.append(f"{aliases['']}='{arg}'")
        else:
            out.append(arg)
    return out


def _entry(command: str, default_stage: Optional[str], allowed: Iterable[str], renamed_to: str = "",
           aliases: Optional[Mapping[str, str]] = None):
    """Build a zero-argument console-script main for ``command``.

    Args:
        renamed_to: the command's new name, when ``command`` is a deprecated one.
        aliases: short argument names of this command (``key=value`` → ``aliases[key]=value``).
    """
    allowed = tuple(allowed)

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
    def _hydra_main(cfg: DictConfig) -> None:
        try:
            _dispatch(cfg, allowed, command)
        except ConfigError as exc:
            print(f"{command}: {exc}", file=sys.stderr)
            sys.exit(2)

    def main() -> None:
        if renamed_to:
            log.warning("%s is deprecated; use %s (the same command)", command, renamed_to)
        if aliases:
            sys.argv[1:] = expand_aliases(sys.argv[1:], aliases)
        sys.argv[1:] = expand_flags(sys.argv[1:], UPSAMPLE_FLAG)
        if default_stage and not any(a.startswith(("stage=", "+stage=")) for a in sys.argv[1:]):
            sys.argv.append(f"stage={default_stage}")
        _hydra_main()

    return main


world_main = _entry("dalle3-world", "world", ["world"])
data_main = _entry("dalle3-data", "world", ["world"], renamed_to="dalle3-world")
train_main = _entry("dalle3-train", None, ["captioner_pretrain", "captioner_finetune", "text_encoder", "vae",
                                             "latents", "ldm", "judge", "upsample"])
recaption_main = _entry("dalle3-recaption", "recaption", ["recaption"])
eval_main = _entry("dalle3-eval", "eval", ["eval"])
generate_main = _entry("dalle3-generate", "generate", ["generate"], aliases=GENERATE_ALIASES)
report_main = _entry("dalle3-report", "report", ["report"], aliases=REPORT_ALIASES)


def pipeline_main() -> None:
    from dalle3.pipeline import main

    main()
