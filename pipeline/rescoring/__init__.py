"""GLMix re-scoring by member blocks (the engine behind ``pipeline.scoring.rescore``).

- :mod:`~pipeline.rescoring.layout`: the model laid out so that a pair's score is one sparse dot product of a
  member vector and a job vector plus per-member/per-job constants and a few gathers (exactly the score
  ``GLMixModel.score`` gives the pair's feature bags).
- :mod:`~pipeline.rescoring.block`: one block of members: filters, fallback pool, scores, top N.
- :mod:`~pipeline.rescoring.stream`: reading candidates and profiles block by block, and the ordered
  worker-process map of the local engine.
- :mod:`~pipeline.rescoring.spark`: the same blocks on Spark (``mapInArrow``).
"""
