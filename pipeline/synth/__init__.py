"""Synthetic job marketplace with a known true GLMix model (``jobrec synth``).

Modules: ``catalog`` (vocabularies), ``entities`` (members, companies, jobs and their raw tables),
``policy`` (the logging policy: sessions, similar-job sampling, positions), ``truth_model`` (the true GLMix
model, its drift, oracle AUC), ``generator`` (streams the days to storage).

Public API: :func:`generate_marketplace`; its tuning knobs :class:`TruthParameters` and
:class:`PolicyParameters`.
"""

from pipeline.synth.generator import generate_marketplace
from pipeline.synth.policy import PolicyParameters
from pipeline.synth.truth_model import TruthParameters

__all__ = ["PolicyParameters", "TruthParameters", "generate_marketplace"]
