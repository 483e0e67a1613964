"""One trial's training: the CUDA out-of-memory retry, seeded adapters, float32 weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune_hpo import training
from finetune_hpo.models import build_trial_model, load_base_model, seed_everything
from finetune_hpo.preprocess import load_tokenized, load_tokenizer
from finetune_hpo.search_space import HyperParameters
from finetune_hpo.tasks import TASKS
from finetune_hpo.training import TrainingSetup
from tests.helpers import prepare_task, small_config


def test_out_of_memory_retries_with_half_the_batch_and_double_accumulation(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(tmp_path, tiny_model)
    prepare_task(tmp_path, config, "sst2")
    real_train_once = training._train_once
    attempts: list[tuple[int, int]] = []

    def first_attempt_runs_out_of_memory(setup, base, tokenizer, data, params, batch_size, accumulation, on_epoch):
        attempts.append((batch_size, accumulation))
        if len(attempts) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_train_once(setup, base, tokenizer, data, params, batch_size, accumulation, on_epoch)

    monkeypatch.setattr(training, "_train_once", first_attempt_runs_out_of_memory)
    task = TASKS["sst2"]
    outcome = training.train_and_evaluate(
        TrainingSetup(task=task, method="full_finetune", seed=0, scratch_dir=tmp_path / "scratch"),
        load_base_model(task, str(tiny_model)),
        load_tokenizer(str(tiny_model)),
        load_tokenized(tmp_path / "results" / "tokenized" / "sst2"),
        HyperParameters(learning_rate=1e-3, batch_size=16, num_train_epochs=1),
    )
    assert attempts == [(16, 1), (8, 2)]
    assert (outcome.per_device_batch_size, outcome.gradient_accumulation_steps, outcome.oom_retries) == (8, 2, 1)
    assert outcome.effective_batch_size == 16  # what the learning rate was chosen for


def test_out_of_memory_at_batch_one_is_raised(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(training, "_train_once", always_out_of_memory)
    task = TASKS["sst2"]
    with pytest.raises(torch.OutOfMemoryError):
        training.train_and_evaluate(
            TrainingSetup(task=task, method="full_finetune", seed=0, max_oom_retries=5),
            load_base_model(task, str(tiny_model)),
            None,
            None,
            HyperParameters(learning_rate=1e-3, batch_size=2, num_train_epochs=1),
        )


def test_lora_adapters_are_initialised_from_the_seed_not_from_earlier_draws(tiny_model: Path) -> None:
    task = TASKS["sst2"]
    setup = TrainingSetup(task=task, method="lora", seed=5, lora_target_modules=["query", "value"])
    params = HyperParameters.from_params(
        {"learning_rate": 1e-3, "batch_size": 8, "num_train_epochs": 1, "lora_rank": 4, "lora_alpha": 8}
    )
    base = load_base_model(task, str(tiny_model), seed=5)
    adapters = []
    for noise in (0, 100):
        torch.rand(noise)  # what an earlier trial might have drawn
        seed_everything(setup.seed)
        model = build_trial_model(base, task, "lora", params, setup.lora_target_modules)
        adapters.append({k: v.clone() for k, v in model.state_dict().items() if "lora_A" in k})
    assert adapters[0].keys() and adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def test_base_model_loads_in_float32_with_a_seeded_head(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM

    task = TASKS["rte"]
    # A bf16 checkpoint: transformers 5 would load it in bf16 (dtype="auto"), where 1e-6 updates vanish.
    AutoModelForMaskedLM.from_pretrained(str(tiny_model)).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in load_base_model(task, str(tmp_path / "bf16")).parameters())
    first, second = (load_base_model(task, str(tiny_model), seed=1) for _ in range(2))
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert not torch.equal(first.classifier.weight, load_base_model(task, str(tiny_model), seed=2).classifier.weight)


@pytest.mark.parametrize("method", ["full_finetune", "lora"])
def test_counted_once_flops_equal_the_stock_trainers(tiny_model: Path, tmp_path: Path, method: str) -> None:
    # The trial's Trainer counts the model's parameters once per model instead of on every step: the FLOPs it
    # adds up must be the stock Trainer's, for a full model and for a peft model, and follow a swapped model.
    from transformers import Trainer, TrainingArguments

    from finetune_hpo.trainer import in_order_trainer_class

    task = TASKS["sst2"]
    params = HyperParameters.from_params(
        {"learning_rate": 1e-3, "batch_size": 8, "num_train_epochs": 1, "lora_rank": 4, "lora_alpha": 8}
    )
    base = load_base_model(task, str(tiny_model), seed=5)
    model = build_trial_model(base, task, method, params, ["query", "value"])
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    ours, stock = in_order_trainer_class()(model=model, args=args), Trainer(model=model, args=args)
    inputs = {"input_ids": torch.ones(4, 7, dtype=torch.long)}
    assert ours.floating_point_ops(inputs) == stock.floating_point_ops(inputs) > 0
    assert ours.floating_point_ops(inputs) == stock.floating_point_ops(inputs)  # from the stored count
    ours.model = stock.model = build_trial_model(base, task, "full_finetune", params)
    assert ours.floating_point_ops(inputs) == stock.floating_point_ops(inputs)
    assert ours.floating_point_ops({"labels": torch.ones(4)}) == stock.floating_point_ops({"labels": torch.ones(4)})


def test_auto_precision_takes_bf16_only_where_the_gpu_computes_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    from finetune_hpo.runtime import effective_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # A V100 or T4: bf16 only by emulation, which torch's default call counts as supported.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert effective_precision("auto") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert effective_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert effective_precision("auto") == effective_precision("bf16") == "fp32"


def test_a_study_resumed_where_precision_resolves_otherwise_is_refused(tmp_path: Path) -> None:
    import optuna

    from finetune_hpo.config import check_config, study_settings
    from finetune_hpo.definition import fingerprint, open_study, study_definition
    from finetune_hpo.storage import StudyError

    config = small_config(tmp_path, tmp_path)
    config["training"]["precision"] = "auto"
    settings = study_settings(check_config(config, check_data_files=False), "sst2", "lora")
    summary = {"splits": {"train": {"sha256": "a"}, "validation": {"sha256": "b"}}}
    on_ampere = study_definition(settings, summary, precision="bf16")
    on_cpu = study_definition(settings, summary, precision="fp32")
    assert fingerprint(on_ampere) != fingerprint(on_cpu)  # the resolved value, not "auto"
    storage = optuna.storages.InMemoryStorage()
    study, _ = open_study(settings, storage, on_ampere)
    study.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}, user_attrs={"precision": "bf16"}))
    with pytest.raises(StudyError, match=r"different precision"):
        open_study(settings, storage, on_cpu)
    # A study defined before precision was resolved stored "auto": the same kind of machine resumes it, with
    # the resolved value recorded from then on; another kind is refused.
    legacy = optuna.storages.InMemoryStorage()
    study, _ = open_study(settings, legacy, study_definition(settings, summary))
    study.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}, user_attrs={"precision": "bf16"}))
    with pytest.raises(StudyError, match=r"different precision"):
        open_study(settings, legacy, on_cpu)
    resumed, _ = open_study(settings, legacy, on_ampere)
    assert resumed.user_attrs["definition"]["precision"] == "bf16"
