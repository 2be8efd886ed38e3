"""`mechuri dataset export --push-to-hub REPO`: upload the exported files as a Hub dataset repo (train, plus test when
--eval-out is given) with `datasets`' `push_to_hub`. The token comes from `HF_TOKEN` or a prior `hf auth login`; add
`--private` for a private repo. Tests never push.
"""

from __future__ import annotations

from pathlib import Path

from datasets import load_dataset


def push_to_hub(repo: str, train: Path, test: Path | None = None, private: bool = False) -> None:
    """Upload the exported files as a Hub dataset repo (needs network and a token; never run in tests)."""
    files = {"train": str(train)}
    if test is not None:
        files["test"] = str(test)
    load_dataset("json", data_files=files).push_to_hub(repo, private=private)
