"""Search-space mapping: config entries -> Optuna distributions, and the errors a typo gets."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from finetune_hpo.search_space import HyperParameters, SearchSpaceError, build_search_space, suggest
from tests.conftest import real_config


def test_protocol_spaces_map_to_the_expected_distributions() -> None:
    spaces = real_config()["search_spaces"]
    full = build_search_space("full_finetune", spaces["full_finetune"], "search_spaces.full_finetune")
    assert full["learning_rate"] == FloatDistribution(1e-6, 1e-4, log=True)
    assert full["batch_size"] == CategoricalDistribution((1, 2, 4))
    assert full["warmup_ratio"] == FloatDistribution(0.0, 0.3)
    assert full["weight_decay"] == FloatDistribution(0.0, 0.3)
    assert full["num_train_epochs"] == IntDistribution(2, 6)
    lora = build_search_space("lora", spaces["lora"], "search_spaces.lora")
    assert lora["lora_rank"] == CategoricalDistribution((4, 8, 16, 32, 64))
    assert lora["lora_alpha"] == CategoricalDistribution((8, 16, 32, 64, 128))
    assert lora["lora_dropout"] == CategoricalDistribution((0.0, 0.05, 0.1))
    assert set(lora) - set(full) == {"lora_rank", "lora_alpha", "lora_dropout"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "float", "low": 1e-3, "high": 1e-5}, r"low \(0.001\) is greater than high"),
        ({"type": "float", "low": 0.0, "high": 1e-3, "log": True}, "log-scale range needs low > 0"),
        ({"type": "categorical", "choices": []}, "non-empty 'choices'"),
        ({"type": "float", "low": 1e-5}, "needs 'low' and 'high'"),
        ({"type": "int", "low": 1.5, "high": 3}, "whole bounds"),
    ],
)
def test_bad_ranges_are_refused_with_the_key(entry: dict, message: str) -> None:
    space = real_config()["search_spaces"]["full_finetune"] | {"learning_rate": entry}
    with pytest.raises(SearchSpaceError, match=message) as err:
        build_search_space("full_finetune", space, "search_spaces.full_finetune")
    assert "search_spaces.full_finetune.learning_rate" in str(err.value)


def test_unknown_hyperparameter_is_refused() -> None:
    space = real_config()["search_spaces"]["full_finetune"] | {"learnig_rate": {"type": "float", "low": 1, "high": 2}}
    with pytest.raises(SearchSpaceError, match=r"unknown hyperparameter.*learnig_rate"):
        build_search_space("full_finetune", space, "search_spaces.full_finetune")


def test_lora_parameters_are_refused_for_full_finetuning() -> None:
    space = real_config()["search_spaces"]["lora"]
    with pytest.raises(SearchSpaceError, match="lora_alpha, lora_dropout, lora_rank"):
        build_search_space("full_finetune", space, "search_spaces.full_finetune")


def test_missing_lora_parameter_is_named() -> None:
    space = dict(real_config()["search_spaces"]["lora"])
    del space["lora_rank"]
    with pytest.raises(SearchSpaceError, match=r"missing hyperparameter.*lora_rank"):
        build_search_space("lora", space, "search_spaces.lora")


def test_impossible_values_are_refused() -> None:
    space = real_config()["search_spaces"]["full_finetune"] | {"batch_size": {"type": "categorical", "choices": [0, 2]}}
    with pytest.raises(SearchSpaceError, match="batch_size: values must be > 0"):
        build_search_space("full_finetune", space, "s")


def test_suggest_samples_inside_the_space() -> None:
    distributions = build_search_space("lora", real_config()["search_spaces"]["lora"], "s")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = suggest(trial, distributions)
        assert isinstance(params, HyperParameters)
        assert 1e-6 <= params.learning_rate <= 1e-4
        assert params.batch_size in (1, 2, 4)
        assert 2 <= params.num_train_epochs <= 6
        assert params.method_parameters["lora_rank"] in (4, 8, 16, 32, 64)
        assert set(trial.params) == set(distributions)
        study.tell(trial, 0.0)
