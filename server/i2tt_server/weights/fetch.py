"""Downloading the public checkpoints into the weights layout (needs internet)."""

from __future__ import annotations

from pathlib import Path



class FetchError(RuntimeError):
    pass


def fetch_weights(dest: Path, folders, log=print) -> list[Path]:
    """Download each folder's checkpoint and save it in save_pretrained layout under dest."""
    from huggingface_hub import snapshot_download

    from ..runners import runner_for_folder

    made = []
    for folder in folders:
        try:
            runner = runner_for_folder(folder)
        except KeyError as exc:
            raise FetchError(exc.args[0]) from None
        repo = runner.checkpoints[folder]
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
        processor, model = runner.load_pretrained(source)
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(target)
        processor.save_pretrained(target)
        log(f"{folder}: saved to {target}")
        made.append(target)
    return made
