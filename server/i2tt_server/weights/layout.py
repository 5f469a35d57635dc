"""Where each model's weights live: ``<weights root>/<folder>/`` in save_pretrained layout.

The folder names are part of the configuration surface: a model's config.pbtxt names its
folder with the ``weights`` parameter, so switching BLIP base/large or TrOCR
printed/handwritten is a one-word config change.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "I2TT_WEIGHTS"
DEFAULT_ROOT = Path.home() / ".cache" / "i2tt" / "weights"

# folder name -> public checkpoint on the Hugging Face hub
CHECKPOINTS: dict[str, str] = {
    "blip-base": "Salesforce/blip-image-captioning-base",
    "blip-large": "Salesforce/blip-image-captioning-large",
    "kosmos-2": "microsoft/kosmos-2-patch14-224",
    "trocr-printed": "microsoft/trocr-base-printed",
    "trocr-handwritten": "microsoft/trocr-base-handwritten",
    "t5-tags": "fabiochiu/t5-base-tag-generation",
}

# Triton model -> (transformers model class, processor class) that load its weights folder.
# The runners, the fetcher and the benchmark's seed-style rows all load through this table.
TRANSFORMERS_CLASSES: dict[str, tuple[str, str]] = {
    "blip_caption": ("BlipForConditionalGeneration", "BlipProcessor"),
    "kosmos2_caption": ("Kosmos2ForConditionalGeneration", "Kosmos2Processor"),
    "trocr_ocr": ("VisionEncoderDecoderModel", "TrOCRProcessor"),
    "t5_tags": ("T5ForConditionalGeneration", "AutoTokenizer"),
}

# weights folder -> the Triton model that serves it
FOLDER_MODEL = {"blip-base": "blip_caption", "blip-large": "blip_caption",
                "kosmos-2": "kosmos2_caption", "trocr-printed": "trocr_ocr",
                "trocr-handwritten": "trocr_ocr", "t5-tags": "t5_tags"}


def load_pretrained(model_name: str, path, **model_kwargs):
    """(processor, model) for a Triton model's weights folder, model in eval mode."""
    import transformers

    model_class, processor_class = TRANSFORMERS_CLASSES[model_name]
    processor = getattr(transformers, processor_class).from_pretrained(path)
    model = getattr(transformers, model_class).from_pretrained(path, **model_kwargs)
    return processor, model.eval()


# The folders the default model repository serves (BLIP-large, printed TrOCR).
DEFAULT_FOLDERS = ("blip-large", "kosmos-2", "trocr-printed", "t5-tags")


def weights_root(explicit: str | os.PathLike | None = None) -> Path:
    """The weights root: an explicit path, else $I2TT_WEIGHTS, else the per-user cache."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else DEFAULT_ROOT


def model_dir(folder: str, root: str | os.PathLike | None = None) -> Path:
    """Resolve a model's weights folder; an absolute ``folder`` is used as it is."""
    path = Path(folder).expanduser()
    return path if path.is_absolute() else weights_root(root) / folder


def missing_folders(root: Path, folders=DEFAULT_FOLDERS) -> list[str]:
    return [f for f in folders if not (root / f / "config.json").is_file()]
