"""Downloading the public checkpoints into the weights layout (needs internet)."""

from __future__ import annotations

from pathlib import Path

from .layout import CHECKPOINTS, FOLDER_MODEL, load_pretrained


class FetchError(RuntimeError):
    pass


def fetch_weights(dest: Path, folders, log=print) -> list[Path]:
    """Download each folder's checkpoint and save it in save_pretrained layout under dest."""
    from huggingface_hub import snapshot_download

    made = []
    for folder in folders:
        if folder not in CHECKPOINTS:
            raise FetchError(f"unknown weights folder {folder!r}; known: {', '.join(CHECKPOINTS)}")
        repo = CHECKPOINTS[folder]
        target = dest / folder
        if (target / "config.json").is_file():
            log(f"{folder}: already in {target}")
            made.append(target)
            continue
        log(f"{folder}: downloading {repo}")
        try:
            source = snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                             "*.model", "spiece*", "*merges*"])
        except Exception as exc:
            raise FetchError(f"could not download {repo}: {type(exc).__name__}: {exc}. "
                             "Without internet, use `i2tt-server make-test-weights` "
                             "(random weights) or copy the folders in by hand.") from None
        processor, model = load_pretrained(FOLDER_MODEL[folder], source)
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(target)
        processor.save_pretrained(target)
        log(f"{folder}: saved to {target}")
        made.append(target)
    return made
