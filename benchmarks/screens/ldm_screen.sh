#!/usr/bin/env bash
# One LDM screen on the dev split (never val): train an ldm run with the given overrides on
# the latents of $OUT (ground-truth captions unless the latents were made from recaptions),
# then score it on $N dev prompts of each kind with the judge of $OUT.
# Usage: OUT=outputs/screen NAME=base bash benchmarks/screens/ldm_screen.sh [hydra overrides...]
set -euo pipefail
OUT=${OUT:-outputs/screen}; NAME=${NAME:?}; N=${N:-256}; STEPS=${STEPS:-1500}
VAE=${VAE:-tests/fixtures/tiny_vae_16k}
RUN=$OUT/ldm_screen/$NAME
COMMON=(paths.out_dir=$OUT ldm.vae.pretrained=$VAE)
t0=$(date +%s)
.venv/bin/dalle3-train stage=ldm "${COMMON[@]}" ldm.run_dir=$RUN trainer.max_steps=$STEPS \
  trainer.progress_bar=false ldm.sample.every_n_steps=0 "$@" > $OUT/ldm_screen_$NAME.train.log 2>&1
t1=$(date +%s)
.venv/bin/dalle3-eval "${COMMON[@]}" "eval.runs=[$RUN]" eval.prompts=data/world/dev eval.num_prompts=$N \
  "eval.kinds=[dsc,alt]" eval.curve=false eval.out_dir=$OUT/eval_dev/$NAME ${EVAL_ARGS:-} > $OUT/ldm_screen_$NAME.eval.log 2>&1
t2=$(date +%s)
.venv/bin/python benchmarks/screens/summarise.py $OUT/eval_dev/$NAME --train-seconds $((t1-t0)) --eval-seconds $((t2-t1)) --name $NAME
