"""The dataset pipeline of 메추리: seed tasks -> Self-Instruct generation -> Korean-aware filter -> Alpaca JSONL.

    mechuri dataset generate --out data/generated.jsonl --num 2000 [--base-url http://127.0.0.1:8000/v1 --model m]
    mechuri dataset filter --in data/generated.jsonl --out data/filtered.jsonl --dropped data/dropped.jsonl \
        --reference dataset_builder/seed_tasks.jsonl
    mechuri dataset stats data/filtered.jsonl
    mechuri dataset export --in data/filtered.jsonl --out data/train.jsonl --eval-out data/eval.jsonl

Modules: schema (row formats, JSONL reader), prompts (the Self-Instruct prompt and its parser), generate (async
OpenAI-compatible client), similarity (tokenizers, ROUGE-L, near-duplicate index), lexicon and slots (the slot
frames of the default near-duplicate decision; slot_lexicon.csv), cleaning (row cleaning, Korean-answer check),
filter, stats, export, hub (the upload). The commands' argument parsing lives in mechuri/dataset_commands.py.
This package stands alone: it imports nothing from bot/, model/ or mechuri/.
"""
