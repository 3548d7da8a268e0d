import pytest

from fewbit.errors import ConfigError
from fewbit.search.config import SearchConfig, parse_budget, parse_budgets

TRAIN = {"dataset": "glyphs", "algorithm": "protonet"}


@pytest.mark.parametrize("text,nbytes", [("24K", 24576), ("24k", 24576), ("24KB", 24576), ("24KiB", 24576),
                                         ("1.5M", 1572864), ("24576", 24576), (1000, 1000), (" 16K ", 16384)])
def test_budgets_parse_with_k_as_1024(text, nbytes):
    assert parse_budget(text) == nbytes


@pytest.mark.parametrize("bad", ["0", 0, "", "K", "abc", "-3K", "24G", True, "1e9", "100M", None])
def test_bad_budgets_are_config_errors(bad):
    with pytest.raises(ConfigError, match="SearchConfig.budget"):
        parse_budget(bad)


def test_budget_list_and_yaml_form():
    assert parse_budgets("12K,16K, 24K") == (12288, 16384, 24576)
    cfg = SearchConfig.from_dict({"budget": "24K", "train": TRAIN, "bits": [2, 4], "sparsity": [0, 0.5]})
    assert cfg.budgets == (24576,) and cfg.train.dataset == "glyphs" and len(cfg.options()) == 2 * 3
    again = SearchConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("data,needle", [
    ({"train": TRAIN}, "give a byte budget"),
    ({"budget": "24K", "budgets": ["12K"], "train": TRAIN}, "not both"),
    ({"budget": "24K", "train": TRAIN, "bits": [5]}, "SearchConfig.bits"),
    ({"budget": "24K", "train": TRAIN, "sparsity": [0.95]}, "SearchConfig.sparsity"),
    ({"budget": "24K", "train": TRAIN, "patterns": ["nm"]}, "SearchConfig.patterns"),
    ({"budget": "24K", "train": TRAIN, "top_k": 0}, "SearchConfig.top_k"),
    ({"budget": "24K", "train": TRAIN, "episodes": 10**9}, "SearchConfig.episodes"),
    ({"budget": "24K", "train": {**TRAIN, "compress": "quant:w4"}}, "the search chooses the spec"),
    ({"budget": "24K", "train": {"dataset": "sinusoid"}}, "regression"),
    ({"budget": "24K", "train": TRAIN, "colour": 1}, "unknown field"),
    ({"budgets": ["1K"] * 17, "train": TRAIN}, "at most 16"),
])
def test_bad_configs_name_their_field(data, needle):
    with pytest.raises(ConfigError, match=needle):
        SearchConfig.from_dict(data)
