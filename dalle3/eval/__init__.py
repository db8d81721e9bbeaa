"""Evaluation of trained ldm runs, and the judge CLIP it scores with.

Files, by role: ``stage.py`` (stages eval, judge and report), ``score.py`` (per-prompt records,
ceiling and chance), ``checks.py`` (exact checks of what a prompt states), ``judge.py`` /
``model.py`` / ``module.py`` / ``data.py`` / ``edits.py`` (the judge CLIP: scorer and validation,
model, LightningModule, one-fact twins, caption edits), ``prompts.py`` (held-out prompts),
``captioners.py`` (the captioners' recall on their recaptions), ``stats.py`` (paired bootstrap),
``report.py`` / ``report_html.py`` / ``figures.py`` (the HTML report).
"""
