"""Re-basin: weight matching under the graph's symmetries (:mod:`.matching`, spec in :mod:`.spec`),
interpolation paths and merging (:mod:`.interpolate`), and aligning many pairs as Ray tasks (:mod:`.fanout`)."""
from pipeline.rebasin.matching import MatchResult, match, matching_objective
from pipeline.rebasin.spec import PermutationSpec, permutation_spec

__all__ = ["MatchResult", "PermutationSpec", "match", "matching_objective", "permutation_spec"]
