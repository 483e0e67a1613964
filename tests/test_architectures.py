"""LoRA target detection for every architecture family the README names, on tiny models built offline from
their configurations: each gets its family's attention projections adapted and trains one LoRA trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_hpo.models import detect_lora_target_modules, detect_modules_to_save, load_base_model
from finetune_hpo.preprocess import load_tokenized, load_tokenizer
from finetune_hpo.search_space import HyperParameters
from finetune_hpo.tasks import TASKS
from finetune_hpo.training import TrainingSetup, train_and_evaluate
from tests.helpers import prepare_task, small_config


def _config(family: str, tokenizer):
    """A two-layer model of ``family``, 32 wide: what matters is its module names, not its quality."""
    import transformers as hf

    common = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    return {
        "bert": lambda: hf.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **common
        ),
        "roberta": lambda: hf.RobertaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
            type_vocab_size=2,
            **common,
        ),
        "llama": lambda: hf.LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            **common,
        ),
        "distilbert": lambda: hf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common),
        "t5": lambda: hf.T5Config(
            d_model=32,
            d_ff=64,
            d_kv=16,
            num_layers=2,
            num_heads=2,
            decoder_start_token_id=tokenizer.pad_token_id,
            # T5's classifier reads the last <eos>: our tokenizer ends every input with [SEP].
            eos_token_id=tokenizer.sep_token_id,
            **common,
        ),
        "gpt2": lambda: hf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, **common),
    }[family]()


# Family -> the modules LoRA must adapt (models.LORA_TARGETS_BY_FAMILY) and the extra modules trained in full.
FAMILIES = {
    "bert": (["query", "value"], ["pooler"]),
    "roberta": (["query", "value"], []),  # RobertaForSequenceClassification has no pooler
    "llama": (["q_proj", "v_proj"], []),
    "distilbert": (["q_lin", "v_lin"], []),
    "t5": (["q", "v"], []),
    "gpt2": (["c_attn"], []),
}


@pytest.fixture(scope="module")
def sst2_data(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    workdir = tmp_path_factory.mktemp("architectures")
    config = small_config(workdir, tiny_model, train_size=40)
    prepare_task(workdir, config, "sst2")  # one sentence per row: every family reads it
    return workdir / "results" / "tokenized" / "sst2"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_adapts_each_familys_attention_and_trains_a_trial(
    family: str, tiny_model: Path, sst2_data: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    task = TASKS["sst2"]
    tokenizer = load_tokenizer(str(tiny_model))
    model_dir = tmp_path / family
    config = _config(family, tokenizer)
    config.num_labels = task.num_labels
    AutoModelForSequenceClassification.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)  # the tests' vocabulary, so the tokenized rows fit every model

    base = load_base_model(task, str(model_dir), seed=0)
    targets, to_save = FAMILIES[family]
    assert detect_lora_target_modules(base) == targets
    assert detect_modules_to_save(base) == to_save
    setup = TrainingSetup(task=task, method="lora", seed=0, eval_batch_size=16, scratch_dir=tmp_path / "scratch")
    params = HyperParameters.from_params(
        {"learning_rate": 1e-3, "batch_size": 8, "num_train_epochs": 1, "lora_rank": 4, "lora_alpha": 8}
    )
    outcome = train_and_evaluate(setup, base, tokenizer, load_tokenized(sst2_data), params)
    # The adapters went where detection said, and only they (with the head and the extra modules) train.
    assert outcome.lora_target_modules == targets
    assert 0 < outcome.trainable_parameters < outcome.total_parameters
    assert 0.0 <= outcome.value <= 100.0 and outcome.training_loss is not None
