"""Co-search autotuner over the mapping pass pipeline: `imcc search`.

`run_search(SearchConfig(model, target, data, ...))` runs or resumes a search and returns a
`SearchResult` (the checked Pareto front, the best point and its pipeline string); see
search/run.py. The space comes from what the tunable passes declare (search/space.py), trials
are evaluated by search/evaluate.py, stored by search/storage.py, driven by the strategies of
search/strategies.py and written out by search/outputs.py.
"""

from imcc.search.outputs import Point
from imcc.search.run import SearchConfig, SearchResult, run_search
from imcc.search.space import Dimension, SearchSpace, build_space

__all__ = [
    "Dimension",
    "Point",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "build_space",
    "run_search",
]
