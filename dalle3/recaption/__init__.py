"""The distributed recaption job (issue #4): ``dalle3-recaption`` / ``stage=recaption``.

* :mod:`dalle3.recaption.job`: ``run(cfg)``, the stage function (validation, loop, commits);
* :mod:`dalle3.recaption.data`: whole shards → decoded batches in DataLoader workers;
* :mod:`dalle3.recaption.writer`: output shards (default) or caption sidecars;
* :mod:`dalle3.recaption.summary`: per-rank summaries and their merge.
"""
