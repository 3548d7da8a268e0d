"""Budget search: per-layer bits and sparsity chosen so that the exported file fits N bytes,
by episode-measured sensitivity, an exact knapsack over bytes, and re-ranking by short training."""

from fewbit.search.config import SearchConfig, parse_budget, parse_budgets
from fewbit.search.knapsack import Choice, best_choices
from fewbit.search.plan import LayerOption, option_grid, plan_spec, uniform_plan
from fewbit.search.search import BudgetResult, SearchResult, search
from fewbit.search.sizing import ArtifactSizer

__all__ = ["ArtifactSizer", "BudgetResult", "Choice", "LayerOption", "SearchConfig", "SearchResult", "best_choices",
           "option_grid", "parse_budget", "parse_budgets", "plan_spec", "search", "uniform_plan"]
