"""GPU throughput of one trial: samples per second and model FLOP utilization (MFU) of full fine-tuning and
LoRA of a base-size encoder (BERT-base shape, 110M parameters) at sequence length 128 in bf16.

It runs the workflow's own trial code (finetune_hpo.training.train_and_evaluate) on random token ids, so
nothing is downloaded. One command, a few minutes on a modern GPU:

    python benchmarks/gpu_throughput.py [--peak-tflops 989] [--examples 8192]

MFU = achieved model FLOP/s / peak bf16 FLOP/s, with 6 x parameters x tokens FLOPs per trained token
(the usual estimate; LoRA skips the weight gradients of frozen layers, so its real FLOPs are lower and
its MFU by this estimate is an upper bound of the useful work).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# bf16 dense peak per GPU (vendor figures, TFLOP/s), for --peak-tflops when not given.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def main() -> None:
    import datasets
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from finetune_hpo.models import count_parameters
    from finetune_hpo.preprocess import TokenizedTask
    from finetune_hpo.search_space import HyperParameters
    from finetune_hpo.tasks import TASKS
    from finetune_hpo.training import TrainingSetup, train_and_evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8192, help="training examples per run")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--peak-tflops", type=float, help="bf16 peak of this GPU (default: from its name)")
    parser.add_argument("--cpu-smoke", action="store_true", help="check the code path on a CPU with a tiny model")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    if not torch.cuda.is_available() and not smoke:
        raise SystemExit("no CUDA device: this benchmark needs a GPU (--cpu-smoke checks the code path)")
    if smoke:
        args.examples, args.seq_len, args.batch_size = 64, 32, 8
    name = "cpu (smoke test)" if smoke else torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    vocab |= {f"w{i}": i for i in range(len(vocab), 30522)}
    tokenizer = BertTokenizer(vocab=vocab)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 30522, (args.examples, args.seq_len), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3
    rows = {
        "input_ids": ids.tolist(),
        "attention_mask": [[1] * args.seq_len] * args.examples,
        "labels": torch.randint(0, 2, (args.examples,), generator=generator).tolist(),
    }
    train = datasets.Dataset.from_dict(rows)
    data = TokenizedTask(train=train, validation=train.select(range(min(512, args.examples))))
    shape = (
        {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 128} if smoke else {}
    )
    base = BertForSequenceClassification(BertConfig(num_labels=2, **shape))  # BERT-base shape, random weights
    results = {"gpu": name, "peak_bf16_tflops": peak, "seq_len": args.seq_len, "batch_size": args.batch_size}
    for method in ("full_finetune", "lora"):
        with tempfile.TemporaryDirectory() as scratch:
            setup = TrainingSetup(
                task=TASKS["sst2"],
                method=method,
                seed=0,
                eval_batch_size=256,
                precision="fp32" if smoke else "bf16",
                scratch_dir=Path(scratch),
            )
            params = HyperParameters(
                learning_rate=2e-5,
                batch_size=args.batch_size,
                num_train_epochs=1,
                method_parameters={"lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.0},
            )
            # A warm-up run compiles kernels and fills the allocator; the second is timed.
            warm = TokenizedTask(
                train=train.select(range(min(args.examples, args.batch_size * 8))), validation=data.validation
            )
            train_and_evaluate(setup, base, tokenizer, warm, params)
            synchronize()
            started = time.perf_counter()
            outcome = train_and_evaluate(setup, base, tokenizer, data, params)
            synchronize()
            seconds = time.perf_counter() - started
        total_params = count_parameters(base)[1]
        samples_per_s = args.examples / seconds
        flops = 6 * total_params * args.seq_len * samples_per_s
        results[method] = {
            "samples_per_s": round(samples_per_s, 1),
            "tokens_per_s": round(samples_per_s * args.seq_len),
            "achieved_tflops": round(flops / 1e12, 1),
            "mfu": round(flops / 1e12 / peak, 3) if peak else None,
            "trainable_parameters": outcome.trainable_parameters,
            "seconds_incl_eval": round(seconds, 2),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
