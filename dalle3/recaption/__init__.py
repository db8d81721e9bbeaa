"""The distributed recaption job: ``dalle3-recaption`` / ``stage=recaption``.

* :mod:`dalle3.recaption.stage`: ``run_recaption(cfg)``, the stage function (checks, plan, summary);
* :mod:`dalle3.recaption.job`: the per-rank loop: captioners, shard outputs and commits;
* :mod:`dalle3.recaption.data`: whole shards → decoded batches in DataLoader workers;
* :mod:`dalle3.recaption.writer`: output shards (default) or caption sidecars;
* :mod:`dalle3.recaption.summary`: per-rank summaries and their merge.
"""
