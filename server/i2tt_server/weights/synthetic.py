"""Deterministic random weights for every model, built offline in the classes the real
checkpoints use (BLIP, Kosmos-2, TrOCR, T5) with processors and tokenizers made from
scratch, so the serving code runs unchanged on them.

``tiny`` models are for tests: a few hundred KB each, built in seconds. Their init scales
and seeds are chosen on purpose: with default init a tiny random model answers the same
text for every input (or nothing at all), which would make parity tests pass vacuously.

``full`` models have the architecture of the public checkpoints (layer counts, widths,
vocabulary sizes, image sizes) with random values, for benchmarks that need realistic
compute offline. Their generation length is pinned (``min_new_tokens`` ==
``max_new_tokens``) so every compared path generates the same number of tokens.
"""

from __future__ import annotations

import string
from pathlib import Path

SIZES = ("tiny", "full")

# A small caption-like corpus: the tiny tokenizers' words, so decoded text looks like text.
WORDS = (
    "a an the of with and on in at by is are two man woman person people dog cat bird "
    "car street table wooden block blocks spelling trivia photography picture image head "
    "human robot circuit digital interface background white black red blue green shirt "
    "sitting standing holding wearing water tree sky building city field grass snow "
    "photo close up view light dark text line book paper letter sign road house window"
).split()

# Generation length that full-size weights pin, per weights folder.
FULL_NEW_TOKENS = {"blip": 20, "kosmos": 32, "trocr": 16, "t5": 32}

# Full-size weights whose answers END at varied lengths (``lengths="varied"``, for the
# in-flight benchmark, where pinned lengths would hide what it changes). Random full-size
# T5 at the default initialisation repeats one token with the same logits at every step;
# at 10x it picks different tokens as it goes, with logits spread over hundreds, and the
# end token raised by this much wins at varied steps. Calibrated on 12 caption-like texts
# (benchlib.inputs.Payloads.text), 8 beams, bfloat16: answers of 2 to 64 tokens (median
# about 12) after 7 to 64 steps; see docs/benchmarks/INFLIGHT.md.
# Random full-size TrOCR at the default initialisation answers every line with one token
# repeated, its logits the same for every image to 0.03. With the decoder's init_std at
# 20x (VARIED_TROCR_INIT; the encoder's stays) it still repeats one or two tokens per
# line, but the image shows: the end token's logit keeps one level per line, 4 to 5
# apart between lines and nearly constant along one (the best other token's about 55). A
# constant end bias then ends a line at its first steps or never, so the end token is
# raised by VARIED_END_BIAS and then by 8 % more of its biased logit at each step
# (generate's own exponential_decay_length_penalty, VARIED_END_GROWTH): a line ends where
# that passes its best other token, sooner the higher its level. (At 30x in the encoder
# and the decoder the tokens change as generation goes on, but chaotically: a line's
# answer changes with the batch it is computed in, from the float32 rounding on. At 20x
# in the decoder alone, stepped generation (runners/stepped.py) gives generate's tokens
# for 16 of 16 lines in float32 and 13 of 16 in bfloat16, the others a token apart.) The
# two folders' seeds put the end token at levels 12 apart, hence a bias per folder.
# Calibrated greedy, 64 new tokens at most, on benchlib line images (Payloads.line 0-47)
# and 24 line crops of its 60-line ocr_page page; new tokens, the end token counted,
# with generate in batches of 8 (min/p10/median/p90/max):
#   trocr-printed lines      bfloat16 7/10/12/15/19, float32 7/10/13/15/19
#   trocr-printed page crops bfloat16 5/8/11.5/14/15, float32 6/8/11/17/19
#   trocr-handwritten lines  bfloat16 9/10/12.5/16/19, float32 8/11/13/16/19
# none at 64; the pad token (a zero row of the tied embedding, so its logit is 0 against
# the best token's ~55) never chosen.
# Random full-size BLIP captions every image alone with the same tokens: the vision
# encoder's states barely reach the text decoder. With the vision encoder's init at 10x
# (VARIED_BLIP_VISION_INIT) each image has its own caption, its tokens changing as it goes,
# and the end token 1.2 to 3 below the best one, by a level per image more than by step. So
# the end token is raised by VARIED_END_BIAS and barred for the first VARIED_MIN_NEW_TOKENS
# (generate's min_new_tokens). BLIP's generate is its text decoder's, whose generation
# config is made from the text config, not read from generation_config.json: both go into
# the text config. Calibrated on blip-large, greedy, bfloat16, 30 new tokens at most, on 16
# benchlib photos (Payloads.photo 0-15), new tokens with the end token: min 8, p10 8,
# median 11.5, max 30 (6 of 16 at 30). Not calibrated for Kosmos-2.
VARIED_T5_INIT = 10.0
VARIED_TROCR_INIT = 0.4
VARIED_BLIP_VISION_INIT = 0.2
VARIED_MIN_NEW_TOKENS = {"blip": 8}
# A family's end bias, or one per variant (its runner's checkpoints, in their order)
VARIED_END_BIAS = {"t5": 300.0, "trocr": (17.0, 2.0), "blip": 2.05}
# (start, factor) of generate's exponential_decay_length_penalty, where a family has one
VARIED_END_GROWTH = {"trocr": (0, 1.08)}
LENGTHS = ("pinned", "varied")


def _wordpiece_vocab(size: int | None) -> dict[str, int]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = specials + chars + ["##" + c for c in chars] + list(WORDS)
    pieces = list(dict.fromkeys(pieces))
    if size:
        pieces += [f"tok{i}" for i in range(size - len(pieces))]
    return {p: i for i, p in enumerate(pieces)}


def _unigram_vocab(specials: list[str], size: int | None) -> list[tuple[str, float]]:
    chars = list(string.ascii_letters + string.digits + string.punctuation)
    pieces = ["▁" + w for w in WORDS] + ["▁"] + chars
    vocab = [(s, 0.0) for s in specials] + [(p, -1.0 - 0.01 * i) for i, p in enumerate(pieces)]
    if size:
        # Each filler piece must win over spelling it out character by character (scores
        # add up per piece): BLIP's full-size vocabulary is made of the same "tokN" words,
        # so its captions reach T5 as one token per word, as real captions do, not ~8.
        vocab += [(f"▁tok{i}", -2.0) for i in range(size - len(vocab))]
    return vocab


def _bytelevel_vocab(size: int | None) -> tuple[dict[str, int], list[str]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    pieces = ["<s>", "<pad>", "</s>", "<unk>"] + list(bytes_to_unicode().values())
    vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
    if size:
        for i in range(size - len(vocab) - 1):  # the mask token comes last
            vocab[f"Ġtok{i}"] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return vocab, []


def _for_size(size: str, tiny: dict, full: dict) -> dict:
    """The config values of the size being built: ``tiny``'s or ``full``'s."""
    return tiny if size == "tiny" else full


def build_blip(dest: Path, size: str, variant: int, lengths: str = "pinned") -> None:
    large = dest.name.endswith("large")
    seed = 2 + variant
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)

    tokenizer = BertTokenizer(vocab=_wordpiece_vocab(30522 if size == "full" else None),
                              model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_tokens(["[ENC]"], special_tokens=True)
    image_size = 32 if size == "tiny" else 384
    vision = _for_size(size,
                     dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, patch_size=8, initializer_range=1.0),
                     dict(hidden_size=1024 if large else 768, intermediate_size=4096 if large else 3072,
                          num_hidden_layers=24 if large else 12, num_attention_heads=16 if large else 12,
                          patch_size=16))
    vision["image_size"] = image_size
    if size == "full" and lengths == "varied":
        vision["initializer_range"] = VARIED_BLIP_VISION_INIT
    text = _for_size(size,
                   dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=64, initializer_range=0.05),
                   dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, max_position_embeddings=512))
    text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                eos_token_id=tokenizer.sep_token_id, encoder_hidden_size=vision["hidden_size"])
    torch.manual_seed(seed)
    config = BlipConfig(text_config=text, vision_config=vision,
                        initializer_range=1.0 if size == "tiny" else 0.02)
    model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(BlipImageProcessor(size={"height": image_size, "width": image_size}),
                              tokenizer)
    _save(model, processor, dest, size, "blip", lengths)


def build_kosmos2(dest: Path, size: str, variant: int, lengths: str = "pinned") -> None:
    seed = 3 + variant
    import torch
    from transformers import (CLIPImageProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration,
                              Kosmos2Processor, XLMRobertaTokenizer)

    tokenizer = XLMRobertaTokenizer(
        vocab=_unigram_vocab(["<s>", "<pad>", "</s>", "<unk>"], 64002 if size == "full" else None),
        model_max_length=2048)
    image_size = 28 if size == "tiny" else 224
    processor = Kosmos2Processor(
        CLIPImageProcessor(size={"shortest_edge": image_size},
                           crop_size={"height": image_size, "width": image_size}),
        tokenizer)
    vision = _for_size(size,
                     dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, initializer_range=1.0),
                     dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                          num_attention_heads=16))
    vision.update(image_size=image_size, patch_size=14)
    text = _for_size(size,
                   dict(embed_dim=32, ffn_dim=64, layers=2, attention_heads=2,
                        max_position_embeddings=256, init_std=1.0),
                   dict(embed_dim=2048, ffn_dim=8192, layers=24, attention_heads=32,
                        max_position_embeddings=2048))
    # The processor adds 1035 tag and patch-index tokens: the text vocabulary must cover them.
    text.update(vocab_size=len(processor.tokenizer), pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    config = Kosmos2Config(text_config=text, vision_config=vision, latent_query_num=64)
    model = Kosmos2ForConditionalGeneration(config).eval()
    if size == "tiny":
        # The 1035 tag and patch-index tokens outnumber the tiny word vocabulary, so a random
        # head emits nothing but patch indices; damp their logits to get words as well.
        with torch.no_grad():
            model.text_model.lm_head.weight[len(tokenizer) - 1035:] *= 0.05
    _save(model, processor, dest, size, "kosmos", lengths)


def build_trocr(dest: Path, size: str, variant: int, lengths: str = "pinned") -> None:
    seed = 4 + variant
    import torch
    from transformers import (RobertaTokenizer, TrOCRConfig, TrOCRProcessor,
                              VisionEncoderDecoderConfig, VisionEncoderDecoderModel,
                              ViTConfig, ViTImageProcessor)

    vocab, merges = _bytelevel_vocab(50265 if size == "full" else None)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=512)
    image_size = 32 if size == "tiny" else 384
    encoder = _for_size(size,
                      dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, patch_size=8, initializer_range=0.5),
                      dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, patch_size=16))
    encoder["image_size"] = image_size
    decoder = _for_size(size,
                      dict(d_model=32, decoder_ffn_dim=64, decoder_layers=2,
                           decoder_attention_heads=2, max_position_embeddings=64, init_std=0.5),
                      dict(d_model=1024, decoder_ffn_dim=4096, decoder_layers=12,
                           decoder_attention_heads=16, max_position_embeddings=512,
                           **({"init_std": VARIED_TROCR_INIT}
                              if lengths == "varied" else {})))
    decoder.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.eos_token_id)
    config = VisionEncoderDecoderConfig(encoder=ViTConfig(**encoder), decoder=TrOCRConfig(**decoder))
    config.decoder_start_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config).eval()
    model.generation_config.decoder_start_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor = TrOCRProcessor(
        ViTImageProcessor(size={"height": image_size, "width": image_size},
                          image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
        tokenizer)
    _save(model, processor, dest, size, "trocr", lengths, variant)


def build_t5(dest: Path, size: str, variant: int, lengths: str = "pinned") -> None:
    seed = 10 + variant
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    tokenizer = T5Tokenizer(vocab=_unigram_vocab(["<pad>", "</s>", "<unk>"],
                                                 32000 if size == "full" else None),
                            extra_ids=100, model_max_length=512)
    dims = _for_size(size,
                   dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        initializer_factor=10.0),
                   dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                        **({"initializer_factor": VARIED_T5_INIT} if lengths == "varied" else {})))
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id, **dims)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    _save(model, tokenizer, dest, size, "t5", lengths)


def _save(model, processor, dest: Path, size: str, family: str,
          lengths: str = "pinned", variant: int = 0) -> None:
    if size == "full" and lengths == "varied":
        # generate's own sequence_bias: the end token's logit raised by a constant, so an
        # answer ends where the end token comes within that of the best other token
        bias = VARIED_END_BIAS[family]
        bias = bias[variant] if isinstance(bias, tuple) else bias
        # where the generate that answers reads its settings (BLIP: the text config)
        config = model.config.text_config if family == "blip" else model.generation_config
        end = config.sep_token_id if family == "blip" else config.eos_token_id
        config.sequence_bias = [[[end], bias]]
        if family in VARIED_MIN_NEW_TOKENS:
            config.min_new_tokens = VARIED_MIN_NEW_TOKENS[family]
        if family in VARIED_END_GROWTH:  # then by a share of it growing at every step
            model.generation_config.exponential_decay_length_penalty = \
                VARIED_END_GROWTH[family]
    elif size == "full":
        n = FULL_NEW_TOKENS[family]
        model.generation_config.min_new_tokens = n
        model.generation_config.max_new_tokens = n
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


# Triton model -> builder(dest, size, variant): ``variant`` is the folder's position in the
# runner's ``checkpoints``, so that base/large and printed/handwritten get distinct seeds.
BUILDERS = {
    "blip_caption": build_blip,
    "kosmos2_caption": build_kosmos2,
    "trocr_ocr": build_trocr,
    "t5_tags": build_t5,
}
FAMILIES = {"blip_caption": "blip", "kosmos2_caption": "kosmos", "trocr_ocr": "trocr",
            "t5_tags": "t5"}


def make_test_weights(dest: Path, size: str = "tiny", folders=None, log=print,
                      lengths: str = "pinned") -> list[Path]:
    """Build weights for ``folders`` (default: every runner's) under ``dest``; returns the
    folders made."""
    from ..runners import checkpoints, runner_for_folder

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    if lengths not in LENGTHS:
        raise ValueError(f"lengths must be one of {LENGTHS}, not {lengths!r}")
    made = []
    for folder in folders or checkpoints():
        runner = runner_for_folder(folder)  # KeyError names the known folders
        log(f"building {size} {folder} in {dest / folder}")
        family = FAMILIES[runner.name]
        if lengths == "varied" and (size != "full" or family not in VARIED_END_BIAS):
            raise ValueError(f"varied lengths are calibrated for full-size "
                             f"{sorted(VARIED_END_BIAS)} only, not {size} {family}")
        BUILDERS[runner.name](dest / folder, size, list(runner.checkpoints).index(folder),
                              lengths)
        made.append(dest / folder)
    return made
