"""Reference data for ibex's vision-language loaders: three small random-weight models, each
saved in the on-disk layout of a real checkpoint family, with their hidden states, embeddings
and tokenizer ids for fixed inputs (CPU, float32, eval mode, fixed seeds).

    pip install torch open_clip_torch timm transformers sentencepiece tokenizers safetensors ftfy
    python tools/make_vlm_fixtures.py           # writes tests/data/vlm/{openclip,siglip,biomedclip}/

Inputs (read-only): ../shared/fixtures/clip/tokenizer_cases.json (200 captions, field "text") and
../shared/fixtures/clip/bench/cases.json (captions), or $IBEX_FIXTURES/clip/...; the openclip
family also compares against the HF CLIP tokenizer ../shared/fixtures/clip/fmnist-clip/tokenizer.json.
Nothing is downloaded: vocabularies are trained here and the models are built from local configs.

openclip/    open_clip's OpenAI-style CLIP (open_clip.model.CLIP from a model_cfg dict), as an
             open_clip hub repo stores it: open_clip_config.json ({"model_cfg", "preprocess_cfg"})
             and open_clip_model.safetensors (open_clip state-dict names). Real CLIP BPE (49408 ids);
             no tokenizer file (the tests use fmnist-clip/tokenizer.json).
siglip/      transformers SiglipModel as save_pretrained writes it (config.json, model.safetensors),
             preprocessor_config.json (SiglipImageProcessor, 32x32) and the tokenizer files of a
             google/siglip repo: spiece.model (a 1000-piece unigram SentencePiece trained here,
             <pad> 0, </s> 1, <unk> 2, no <s>, nmt_nfkc), tokenizer_config.json,
             special_tokens_map.json; no tokenizer.json.
biomedclip/  microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224's layout: open_clip_config.json
             (timm vit_base_patch16_224 vision tower, HF BiomedBERT text tower), a torch pickle
             open_clip_pytorch_model.bin (with the stale text.transformer.embeddings.position_ids entry
             the real checkpoint has), vocab.txt (a ~1000-entry lowercased WordPiece vocabulary trained
             here, [PAD] 0 [UNK] 1 [CLS] 2 [SEP] 3 [MASK] 4), tokenizer_config.json and
             special_tokens_map.json; no tokenizer.json and no BERT config.json. The model is built with
             open_clip's own classes (CustomTextCLIP, TimmModel, HFTextEncoder); the timm trunk is a small
             vit_base_patch16_224 (embed 128, depth 2, 2 heads, 64x64 input) and the BERT a small
             BertConfig, both constructed locally.

reference.safetensors in each directory:
  pixel_values          [1,3,S,S] f32, torch.randn under a fixed seed (no image preprocessing)
  input_ids             [1,L] i64, exactly the ids the text tower receives in the reference run:
                        openclip and biomedclip unpadded (asserted to give the same text embedding as
                        open_clip's own padded tokens, 77 / 256); siglip padded with </s> to 64, no
                        attention mask, as SigLIP is used
  vision_hidden_states  [n_layers+1, 1, T, Dv]: index 0 = the embedding output as fed to the first
                        block, index k = output of block k-1; all before any final / post norm
  text_hidden_states    [n_layers+1, 1, L, Dt], same convention
  image_embeds, text_embeds  [1,E] unnormalised projected embeddings (encode_image/encode_text with
                        normalize=False; SiglipModel.get_image_features/get_text_features pooler_output)
Hidden states are recorded with forward hooks on the models' own blocks during the reference
forward pass (and, for SigLIP, checked against output_hidden_states).

tokenizer_cases.json in each directory: [{"text", "ids"}] for the 200 captions, ids with special
tokens, unpadded and untruncated:
  openclip    open_clip.tokenizer.SimpleTokenizer(context_length=1024)(text)[0], cut after
              <end_of_text> (49407). SimpleTokenizer cleans with ftfy.fix_text, html.unescape twice,
              strip, whitespace collapse (" ".join(text.split())) and lower-case, then byte-level BPE;
              ids = [49406] + bpe + [49407].
  siglip      SiglipTokenizer(vocab_file="spiece.model")(text).input_ids (the slow SentencePiece
              tokenizer; transformers has no fast SigLIP tokenizer): "▁" + text -> lower-case, ASCII
              punctuation removed, whitespace runs -> " ", strip -> SentencePiece -> + [</s>=1].
              meta.json spells out the exact steps.
  biomedclip  open_clip's HFTokenizer semantics without padding/truncation:
              BertTokenizer.from_pretrained(dir)(whitespace_clean(basic_clean(text))).input_ids, i.e.
              ftfy.fix_text, html.unescape twice, strip, whitespace collapse (no lower-casing here; the
              BERT normaliser lower-cases and strips accents), then [CLS]=2 + WordPiece + [SEP]=3.
meta.json records versions, sizes, the caption, the LayerNorm eps / activation of every place,
the checkpoint tensor names and shapes, and the quirks found.
"""
import contextlib
import copy
import html
import importlib.metadata
import io
import json
import os
import platform
import random
import re
import tempfile
from collections import Counter, OrderedDict

import ftfy
import open_clip
import sentencepiece as spm
import timm
import tokenizers
import torch
import torch.nn as nn
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import load_file, save_file
from sentencepiece import sentencepiece_model_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "data", "vlm")
FIX = os.environ.get("IBEX_FIXTURES", os.path.join(ROOT, "..", "shared", "fixtures"))
CLIP_FIX = os.path.join(FIX, "clip")

CAPTION = "a photo of a bag and a coat"
NOISE = 0.05  # added to every parameter (times a standard normal) so that every layer matters
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


# ---------------------------------------------------------------------------------------------
# Inputs: the 200 tokenizer captions and a small English training corpus for the vocabularies
# ---------------------------------------------------------------------------------------------

def case_texts():
    with open(os.path.join(CLIP_FIX, "tokenizer_cases.json"), encoding="utf-8") as f:
        return [c["text"] for c in json.load(f)]


ADJECTIVES = """small large tiny huge little big old new young ancient modern red blue green yellow black
white brown grey gray pink purple orange golden silver wooden metal plastic glass leather woollen cotton
shiny dull dark bright light sunny cloudy rainy snowy foggy windy stormy empty full crowded quiet noisy
busy calm happy sad sleepy angry curious striped spotted checked round square flat long short tall narrow
wide thick thin soft hard warm hot cold cool fresh dirty clean broken open closed wet dry heavy fluffy
furry smooth rough beautiful ugly famous strange colorful vintage rustic elegant simple fancy cheap
expensive healthy sick tired hungry friendly wild domestic frozen boiled fried baked sliced delicious
sweet bitter salty spicy""".split()
NOUNS = """cat dog bird horse cow sheep goat pig chicken duck rabbit mouse elephant giraffe zebra lion tiger
bear monkey fish turtle snake frog butterfly bee bag coat shirt dress trouser sandal sneaker boot pullover
jacket hat cap scarf glove sock skirt jeans sweater umbrella backpack suitcase wallet watch necklace ring
car bus truck bicycle motorcycle train boat ship plane helicopter tractor taxi van scooter tree flower
plant bush grass leaf rock stone house building bridge tower castle church temple barn tent fence wall
roof window door stair table chair sofa bed lamp desk shelf cupboard mirror carpet pillow blanket cup mug
glass bottle plate bowl spoon fork knife pan pot kettle oven fridge sink pizza sandwich burger cake cookie
bread cheese egg apple banana orange grape lemon strawberry tomato potato carrot onion salad soup rice
pasta coffee tea juice milk book newspaper magazine letter phone computer laptop keyboard screen camera
television radio clock kite ball balloon guitar piano violin drum toy doll robot child baby man woman
person girl boy player teacher doctor nurse patient farmer chef pilot soldier police student artist
dancer singer crowd family friend couple team skier surfer skateboard surfboard snowboard ski racket bat
frisbee""".split()
PLACES = """park kitchen garden street beach field room office hospital market station airport forest
desert lake river city village stadium school library museum restaurant cafe shop mall harbor island
valley hill mountain highway bridge farm zoo playground classroom bathroom bedroom garage courtyard square
alley tunnel countryside jungle ocean sea pond waterfall cave""".split()
VERBS = """sitting standing running walking playing eating drinking sleeping holding wearing looking
riding jumping swimming flying parked lying waiting reading writing cooking painting singing dancing
climbing smiling laughing crossing carrying pulling pushing throwing catching watching resting
hiding""".split()
PREPOSITIONS = "on in near beside behind under above across inside outside along around between against below".split()
FINDINGS = """consolidation opacity effusion nodule mass fracture edema atelectasis pneumothorax
cardiomegaly infiltrate lesion calcification thickening emphysema fibrosis pneumonia tumor carcinoma
metastasis hemorrhage infarct stenosis aneurysm thrombosis inflammation necrosis hyperplasia dysplasia
adenoma cyst abscess granuloma lymphadenopathy scoliosis osteoporosis arthritis""".split()
SITES = ["left lower lobe", "right upper lobe", "right middle lobe", "left upper lobe", "lung base",
         "hilum", "mediastinum", "pleural space", "chest wall", "heart border", "liver", "kidney", "brain",
         "spine", "pancreas", "spleen", "stomach", "colon", "bladder", "prostate", "breast", "thyroid",
         "skin", "retina", "femur", "knee joint", "shoulder", "pelvis", "aorta", "coronary artery"]
MODALITIES = ["chest x-ray", "ct scan", "mri", "ultrasound", "histology slide", "radiograph",
              "mammogram", "fundus photograph", "dermoscopy image", "microscopy image", "pet scan",
              "angiogram", "endoscopy image", "h&e stained section"]


def training_corpus():
    """The 200 captions, the 100 benchmark captions and 6000 template sentences (seed 0)."""
    with open(os.path.join(CLIP_FIX, "bench", "cases.json"), encoding="utf-8") as f:
        bench = [c["caption"] for c in json.load(f)]
    rng = random.Random(0)
    a, n, p = (lambda: rng.choice(ADJECTIVES)), (lambda: rng.choice(NOUNS)), (lambda: rng.choice(PLACES))
    v, pr = (lambda: rng.choice(VERBS)), (lambda: rng.choice(PREPOSITIONS))
    f_, s_, m_ = (lambda: rng.choice(FINDINGS)), (lambda: rng.choice(SITES)), (lambda: rng.choice(MODALITIES))
    templates = [
        lambda: f"a photo of a {a()} {n()}",
        lambda: f"A {a()} {n()} {v()} {pr()} the {p()}.",
        lambda: f"There are {rng.randint(2, 12)} {n()}s in the {p()}.",
        lambda: f"the {n()} is {a()} and {a()}",
        lambda: f"{m_()} showing {f_()} in the {s_()}",
        lambda: f"No evidence of {f_()}; mild {f_()} of the {s_()}.",
        lambda: f"a {n()} and a {n()} {pr()} a {a()} {p()}",
        lambda: f"Picture of {n()}s {v()} at {rng.randint(1, 12)}:{rng.randint(10, 59)} in the {p()}!",
        lambda: f"{a().capitalize()} {n()}, {a()} {n()} and {a()} {n()}?",
        lambda: f"an image of the {p()} with {a()} {n()}s",
        lambda: f"Two {n()}s {v()} {pr()} a {a()} {n()} in the {p()}",
        lambda: f"close-up of a {a()} {n()}'s {n()}",
    ]
    generated = [rng.choice(templates)() for _ in range(6000)]
    return case_texts() + bench + generated


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def randomise(model, seed):
    """Default init plus NOISE * N(0, 1) on every parameter (LayerNorm weights stay around 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(NOISE * torch.randn(p.shape, generator=g))
    return model.eval()


class BlockRecorder(contextlib.AbstractContextManager):
    """Forward hooks on a list of blocks: the tensor entering the first block, then the output of
    every block. `stacked()` gives [n_blocks + 1, batch, tokens, width]."""

    def __init__(self, blocks):
        self.states = []
        self.handles = [blocks[0].register_forward_pre_hook(self._enter, with_kwargs=True)]
        self.handles += [b.register_forward_hook(self._leave) for b in blocks]

    def _enter(self, module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        self.states.append(x.detach().clone())

    def _leave(self, module, args, out):
        out = out[0] if isinstance(out, (tuple, list)) else out
        self.states.append(out.detach().clone())

    def stacked(self):
        return torch.stack(self.states).contiguous()

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def pattern(name):
    """Fold the block index of a per-layer name: '...resblocks.3.attn' -> '...resblocks.{i}.attn'."""
    return re.sub(r"\b(resblocks|blocks|layer|layers)\.\d+(?=\.|$)", r"\1.{i}", name)


def grouped_shapes(state):
    """{'a.{i}.b': [shape], ...} in checkpoint order, with layer indices folded into {i}."""
    out = OrderedDict()
    for k, t in state.items():
        key, shape = pattern(k), list(t.shape)
        assert out.setdefault(key, shape) == shape, (k, shape, out[key])
    return out


def layer_norm_eps(model):
    return OrderedDict((pattern(n), m.eps) for n, m in model.named_modules() if isinstance(m, nn.LayerNorm))


def activations(model):
    """Where each activation module sits, with its exact flavour."""
    out = OrderedDict()
    for n, m in model.named_modules():
        cls = type(m).__name__
        if isinstance(m, nn.GELU):
            desc = f"nn.GELU(approximate={m.approximate!r})"
        elif cls == "QuickGELU":
            desc = "QuickGELU x*sigmoid(1.702x)"
        elif cls == "GELUActivation":
            desc = "transformers GELUActivation (hidden_act 'gelu'): exact erf GELU"
        elif cls in ("GELUTanh", "PytorchGELUTanh"):
            desc = f"transformers {cls} (hidden_act 'gelu_pytorch_tanh'): tanh-approximated GELU"
        elif "GELU" in cls or cls in ("Tanh", "ReLU", "SiLU"):
            desc = cls
        else:
            continue
        out[pattern(n)] = desc
    return out


def versions():
    names = ["torch", "open_clip_torch", "timm", "transformers", "sentencepiece", "tokenizers",
             "safetensors", "ftfy", "numpy"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def save_reference(d, pixel_values, input_ids, vision_hs, text_hs, image_embeds, text_embeds):
    tensors = {
        "pixel_values": pixel_values, "input_ids": input_ids.to(torch.int64),
        "vision_hidden_states": vision_hs, "text_hidden_states": text_hs,
        "image_embeds": image_embeds, "text_embeds": text_embeds,
    }
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(d, "reference.safetensors"))
    return {k: list(v.shape) for k, v in tensors.items()}


def max_diff(a, b):
    return float((a - b).abs().max())


# ---------------------------------------------------------------------------------------------
# 1) open_clip OpenAI-style CLIP
# ---------------------------------------------------------------------------------------------

OPENCLIP_CFG = {
    "embed_dim": 24,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 32, "mlp_ratio": 4.0,
                   "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 3},
}


def openclip_text_run(model, ids):
    """open_clip's own encode_text on `ids` [1, L] with hooks on the text blocks. open_clip only runs
    at its full context (positional_embedding [77, W], causal mask [77, 77]); for L < 77 the run uses
    a copy whose context is cut to L (the first L positions and the top-left LxL of the mask)."""
    L = ids.shape[1]
    m = model
    if L != model.context_length:
        m = copy.deepcopy(model)
        m.positional_embedding = nn.Parameter(model.positional_embedding[:L].detach().clone())
        m.attn_mask = model.attn_mask[:L, :L].clone()
    with torch.no_grad(), BlockRecorder(m.transformer.resblocks) as rec:
        emb = m.encode_text(ids, normalize=False)
    return emb, rec.stacked()


def make_openclip(texts):
    d = os.path.join(OUT, "openclip")
    os.makedirs(d, exist_ok=True)
    config = {
        "model_cfg": OPENCLIP_CFG,
        "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
                           "resize_mode": "shortest"},
    }
    write_json(os.path.join(d, "open_clip_config.json"), config)

    torch.manual_seed(0)
    model = randomise(open_clip.model.CLIP(**copy.deepcopy(OPENCLIP_CFG)), seed=1)
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(d, "open_clip_model.safetensors"))

    # Reload through open_clip's own local-dir path (config + checkpoint) and use that model.
    model = open_clip.create_model(f"local-dir:{d}").eval()
    assert model.visual.preprocess_cfg["interpolation"] == "bicubic"
    tokenizer = open_clip.get_tokenizer(f"local-dir:{d}")
    assert isinstance(tokenizer, SimpleTokenizer) and tokenizer.context_length == 77

    torch.manual_seed(10)
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), BlockRecorder(model.visual.transformer.resblocks) as rec:
        image_embeds = model.encode_image(pixel_values, normalize=False)
    vision_hs = rec.stacked()

    padded = tokenizer([CAPTION])  # [1, 77], zero padded
    L = int(padded[0].argmax()) + 1  # open_clip pools at argmax = <end_of_text>
    ids = padded[:, :L].clone()
    text_embeds, text_hs = openclip_text_run(model, ids)
    emb77, hs77 = openclip_text_run(model, padded)
    assert max_diff(text_embeds, emb77) < 1e-6, max_diff(text_embeds, emb77)
    assert max_diff(text_hs, hs77[:, :, :L]) < 1e-5
    shapes = save_reference(d, pixel_values, ids, vision_hs, text_hs, image_embeds, text_embeds)

    # Tokenizer cases: SimpleTokenizer with a context long enough that nothing is truncated.
    long_tok = SimpleTokenizer(context_length=1024)
    cases = []
    for t in texts:
        row = long_tok([t])[0].tolist()
        cut = row.index(long_tok.eot_token_id) + 1
        assert not any(row[cut:]) and cut < 1024
        cases.append({"text": t, "ids": row[:cut]})
    write_json(os.path.join(d, "tokenizer_cases.json"), cases)

    # Against the HF CLIP tokenizer the tests use.
    hf = tokenizers.Tokenizer.from_file(os.path.join(CLIP_FIX, "fmnist-clip", "tokenizer.json"))
    with open(os.path.join(CLIP_FIX, "tokenizer_cases.json"), encoding="utf-8") as f:
        shared_cases = json.load(f)
    differ = []
    for i, c in enumerate(cases):
        hf_ids = hf.encode(c["text"]).ids
        if hf_ids == c["ids"]:
            continue
        t = c["text"]
        steps = []
        if ftfy.fix_text(t) != t:
            steps.append(f"ftfy.fix_text: {t!r} -> {ftfy.fix_text(t)!r}")
        if html.unescape(html.unescape(ftfy.fix_text(t))) != ftfy.fix_text(t):
            steps.append("html.unescape")
        cleaned = open_clip.tokenizer._clean_lower(t)
        explained = hf.encode(cleaned).ids == c["ids"]
        differ.append({"index": i, "text": t, "open_clip_ids": c["ids"], "hf_tokenizer_json_ids": hf_ids,
                       "cleaning_steps_that_change_the_text": steps,
                       "hf_ids_of_open_clip_cleaned_text_equal_open_clip_ids": explained})
    same_as_shared = sum(c["ids"] == s["openclip_ids"] for c, s in zip(cases, shared_cases))

    meta = {
        "family": "open_clip OpenAI-style CLIP (open_clip.model.CLIP, built-in VisionTransformer and text transformer)",
        "versions": versions(),
        "files": {
            "open_clip_config.json": "{'model_cfg', 'preprocess_cfg'} as open_clip's push_to_hf_hub.save_config_for_hf writes it "
                                     "(model_cfg is what open_clip.model.CLIP(**model_cfg) takes)",
            "open_clip_model.safetensors": "state_dict() of open_clip.model.CLIP, open_clip names, f32",
            "tokenizer": "none here: the CLIP BPE; the tests copy ../shared/fixtures/clip/fmnist-clip/tokenizer.json in",
        },
        "sizes": {
            "image_size": 32, "patch_size": 8, "grid": 4, "vision_tokens": 17, "vision_width": 64,
            "vision_layers": 3, "vision_heads": 2, "vision_head_width": 32, "vision_mlp": 256,
            "text_context_length": 77, "text_vocab": 49408, "text_width": 16, "text_heads": 2,
            "text_layers": 3, "text_mlp": 64, "embed_dim": 24,
        },
        "seeds": {"construction": 0, "noise": 1, "pixel_values": 10},
        "weight_noise": f"default init + {NOISE} * N(0,1) on every parameter",
        "caption": CAPTION,
        "input_ids": ids[0].tolist(),
        "input_ids_note": "open_clip.get_tokenizer('local-dir:openclip') ids (77, zero padded) cut after <end_of_text>; "
                          "the text embedding of these unpadded ids equals that of the 77-padded ids (asserted to 1e-6)",
        "reference_shapes": shapes,
        "hidden_states": "vision: index 0 = ln_pre(cls + patches + positional_embedding), T = 17 (class token first); "
                         "text: index 0 = token_embedding + positional_embedding[:L]; all before ln_post / ln_final",
        "forward": {
            "vision": "conv1 (8x8 stride 8, no bias) -> flatten row-major -> [class_embedding; patches] + positional_embedding "
                      "-> ln_pre -> resblocks (pre-norm: x + attn(ln_1 x); x + mlp(ln_2 x)) -> ln_post on all tokens -> "
                      "token 0 -> @ visual.proj ([width, embed] matrix, x @ proj)",
            "text": "token_embedding + positional_embedding -> resblocks with causal mask -> ln_final -> token at "
                    "argmax(ids) (the <end_of_text> id 49407 is the largest) -> @ text_projection ([width, embed], x @ P)",
            "attention": "nn.MultiheadAttention: in_proj_weight [3W, W] = q;k;v rows, in_proj_bias [3W], out_proj; "
                         "scale 1/sqrt(head_dim), softmax in f32",
            "mlp": "c_fc -> GELU (exact erf, quick_gelu false) -> c_proj",
            "logit_scale": "scalar (shape []), log(1/0.07) + noise; no logit_bias",
        },
        "layer_norm_eps": layer_norm_eps(model),
        "activations": activations(model),
        "checkpoint_tensors": grouped_shapes(load_file(os.path.join(d, "open_clip_model.safetensors"))),
        "quirks": [
            "open_clip's CLIP.encode_text only runs at the full context: it adds the whole positional_embedding [77, W] "
            "and uses the [77, 77] causal mask, so unpadded ids fail there; the reference run uses a copy with both cut "
            "to L (identical result, asserted)",
            "visual.proj [64, 24] and text_projection [16, 24] are [in, out] matrices applied as x @ P, unlike nn.Linear "
            "weights [out, in]",
            "visual.conv1 has no bias; ln_pre exists (OpenAI layout); attention in_proj packs q, k, v along rows",
            "logit_scale is a 0-d tensor (shape [])",
            "the HF tokenizer.json differs from open_clip's tokenizer only where ftfy / html.unescape change the text "
            "(here: curly quotes, case 40)",
        ],
        "tokenizer_cases": {
            "how": "open_clip.tokenizer.SimpleTokenizer(context_length=1024)(text)[0] cut after <end_of_text> (49407)",
            "cleaning": "ftfy.fix_text -> html.unescape(html.unescape(.)) -> strip -> ' '.join(text.split()) -> lower(); "
                        "then the regex <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+ "
                        "(IGNORECASE), byte-level BPE with </w> word ends; ids = [49406] + bpe + [49407]",
            "identical_to_shared_openclip_ids": f"{same_as_shared} of {len(cases)} equal the 'openclip_ids' of "
                                                "../shared/fixtures/clip/tokenizer_cases.json",
            "differences_vs_hf_tokenizer_json": differ,
            "differences_note": "HF tokenizer.json (CLIPTokenizerFast) normalises with NFC + whitespace collapse + lower-case "
                                "only; it has no ftfy step and no html unescape, so texts ftfy or html.unescape change differ.",
        },
    }
    write_json(os.path.join(d, "meta.json"), meta)
    return meta


# ---------------------------------------------------------------------------------------------
# 2) SigLIP (transformers SiglipModel)
# ---------------------------------------------------------------------------------------------

SIGLIP_SPECIAL = {
    "eos_token": {"content": "</s>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False},
    "pad_token": {"content": "</s>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False},
    "unk_token": {"content": "<unk>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False},
}
SIGLIP_TOKENIZER_CONFIG = {
    "added_tokens_decoder": {
        "1": dict(SIGLIP_SPECIAL["eos_token"], special=True),
        "2": dict(SIGLIP_SPECIAL["unk_token"], special=True),
    },
    "additional_special_tokens": [],
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "</s>",
    "model_input_names": ["input_ids"],
    "model_max_length": 64,
    "pad_token": "</s>",
    "processor_class": "SiglipProcessor",
    "sp_model_kwargs": {},
    "tokenizer_class": "SiglipTokenizer",
    "unk_token": "<unk>",
}


def train_sentencepiece(corpus):
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, model_type="unigram", vocab_size=1000,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="nmt_nfkc",
        character_coverage=0.9995, byte_fallback=False, num_threads=1, minloglevel=2)
    return buf.getvalue()


def make_siglip(texts, corpus):
    from transformers import (AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel,
                              SiglipTokenizer)

    d = os.path.join(OUT, "siglip")
    os.makedirs(d, exist_ok=True)
    proto = train_sentencepiece(corpus)
    assert proto == train_sentencepiece(corpus), "SentencePiece training is not deterministic"
    spm_path = os.path.join(d, "spiece.model")
    with open(spm_path, "wb") as f:
        f.write(proto)
    write_json(os.path.join(d, "tokenizer_config.json"), SIGLIP_TOKENIZER_CONFIG)
    write_json(os.path.join(d, "special_tokens_map.json"), SIGLIP_SPECIAL)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)

    sp = spm.SentencePieceProcessor(model_file=spm_path)
    mp = sentencepiece_model_pb2.ModelProto.FromString(proto)
    vocab = sp.get_piece_size()
    assert vocab == 1000 and [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]

    config = SiglipConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=1,
                         eos_token_id=1, bos_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    randomise(SiglipModel(config), seed=2).save_pretrained(d)
    model = SiglipModel.from_pretrained(d).eval()

    tok = SiglipTokenizer(vocab_file=spm_path)
    auto_tok = AutoTokenizer.from_pretrained(d)
    dir_tok = SiglipTokenizer.from_pretrained(d)

    torch.manual_seed(20)
    pixel_values = torch.randn(1, 3, 32, 32)
    ids = tok([CAPTION], padding="max_length", max_length=64, return_tensors="pt").input_ids
    assert ids.shape == (1, 64) and int(ids[0, -1]) == 1

    vm, tm = model.vision_model, model.text_model
    with torch.no_grad():
        with BlockRecorder(vm.encoder.layers) as vrec:
            vout = vm(pixel_values=pixel_values, output_hidden_states=True)
        with BlockRecorder(tm.encoder.layers) as trec:
            tout = tm(input_ids=ids, output_hidden_states=True)
        image_embeds, text_embeds = vout.pooler_output, tout.pooler_output
        img_f = model.get_image_features(pixel_values=pixel_values)
        txt_f = model.get_text_features(input_ids=ids)
    img_f = getattr(img_f, "pooler_output", img_f)
    txt_f = getattr(txt_f, "pooler_output", txt_f)
    assert max_diff(img_f, image_embeds) == 0 and max_diff(txt_f, text_embeds) == 0
    vision_hs, text_hs = vrec.stacked(), trec.stacked()
    assert max_diff(vision_hs, torch.stack(vout.hidden_states)) == 0
    assert max_diff(text_hs, torch.stack(tout.hidden_states)) == 0
    shapes = save_reference(d, pixel_values, ids, vision_hs, text_hs, image_embeds, text_embeds)

    cases, equivalent = [], 0
    for t in texts:
        got = tok(t).input_ids
        assert got == dir_tok(t).input_ids == auto_tok(t).input_ids
        cases.append({"text": t, "ids": got})
        equivalent += got == sp.encode(tok.canonicalize_text(t)) + [1]
    write_json(os.path.join(d, "tokenizer_cases.json"), cases)
    unk_in_cases = sum(2 in c["ids"] for c in cases)

    ns, ts = mp.normalizer_spec, mp.trainer_spec
    meta = {
        "family": "transformers SiglipModel (google/siglip-* layout)",
        "versions": versions(),
        "files": {
            "config.json, model.safetensors": "SiglipModel.save_pretrained (model_type 'siglip'); the reference run uses "
                                              "SiglipModel.from_pretrained(dir)",
            "preprocessor_config.json": "SiglipImageProcessor(size 32x32).save_pretrained: bicubic resize to 32x32 (no crop), "
                                        "x/255, mean 0.5 std 0.5",
            "spiece.model": "SentencePiece unigram model trained here (see sentencepiece)",
            "tokenizer_config.json, special_tokens_map.json": "written in the format of the google/siglip hub repos "
                                                              "(tokenizer_class SiglipTokenizer, pad = eos = '</s>', unk '<unk>', "
                                                              "do_lower_case true, model_max_length 64)",
        },
        "sizes": {
            "image_size": 32, "patch_size": 8, "vision_tokens": 16, "vision_hidden": 32, "vision_intermediate": 64,
            "vision_layers": 2, "vision_heads": 2, "text_vocab": vocab, "text_hidden": 32, "text_intermediate": 64,
            "text_layers": 2, "text_heads": 2, "text_max_position_embeddings": 64, "embed_dim": 32,
        },
        "seeds": {"construction": 0, "noise": 2, "pixel_values": 20},
        "weight_noise": f"default init + {NOISE} * N(0,1) on every parameter",
        "attn_implementation": model.config._attn_implementation,
        "caption": CAPTION,
        "input_ids": ids[0].tolist(),
        "input_ids_note": "SiglipTokenizer(vocab_file=spiece.model)(caption, padding='max_length', max_length=64): "
                          "padded with </s> = 1, passed without attention mask (as SigLIP is trained and used)",
        "reference_shapes": shapes,
        "hidden_states": "vision: index 0 = patch_embedding(conv 8x8 stride 8, bias) flattened + position_embedding, "
                         "T = 16, no class token; text: index 0 = token_embedding + position_embedding; all before "
                         "post_layernorm / final_layer_norm (checked equal to output_hidden_states)",
        "forward": {
            "encoder_layer": "x + self_attn(layer_norm1 x); x + mlp(layer_norm2 x); q/k/v/out_proj separate Linear with bias, "
                             "scale head_dim^-0.5, no mask (text attention is bidirectional, pads attended)",
            "mlp": f"fc1 -> {model.config.vision_config.hidden_act} (tanh-approximated GELU) -> fc2, in both towers and in the head",
            "text_pooling": "final_layer_norm over all tokens -> LAST position (index L-1, a pad </s> when padded) -> "
                            "head Linear(hidden, projection_size=hidden, bias) = text_embeds",
            "vision_pooling": "post_layernorm -> SiglipMultiheadAttentionPoolingHead: probe [1,1,D] as the single query, "
                              "nn.MultiheadAttention(D, heads, batch_first) over the 16 tokens (in_proj_weight [3D,D] q;k;v, "
                              "in_proj_bias, out_proj), then h = attn; h + mlp(layernorm(h)) (head.layernorm eps = "
                              "vision layer_norm_eps), token 0 = image_embeds",
            "logits": "logits_per_text = text_n @ image_n.T * exp(logit_scale) + logit_bias (both shape [1])",
        },
        "layer_norm_eps": layer_norm_eps(model),
        "activations": activations(model),
        "checkpoint_tensors": grouped_shapes(load_file(os.path.join(d, "model.safetensors"))),
        "quirks": [
            "ASCII punctuation is removed BEFORE SentencePiece's NFKC, so punctuation that NFKC creates survives: "
            "'…' -> '...' (e.g. case 'ellipsis… and em—dash'); unicode quotes and dashes are kept as they are",
            "text_embeds come from the LAST position (index 63), which is a pad </s> for short captions; the model "
            "attends to pads (no mask)",
            "SiglipTextConfig's defaults bos_token_id 49406 / eos_token_id 49407 are CLIP leftovers outside this vocab; "
            "config.json here has pad_token_id 1, eos_token_id 1, bos_token_id null (the model does not use them)",
            "tokenizer_config.json is written in the hub files' (transformers 4.x) format; transformers 5.24's own "
            "save_pretrained would write 'backend': 'sentencepiece', 'extra_special_tokens' and lstrip/rstrip false "
            "and no special_tokens_map.json; both load to the same tokenizer",
            "the head's nn.MultiheadAttention packs q, k, v in in_proj_weight [3D, D] (rows q, then k, then v)",
            "logit_scale and logit_bias have shape [1]",
        ],
        "sentencepiece": {
            "training": "SentencePieceTrainer: model_type unigram, vocab_size 1000, normalization_rule_name nmt_nfkc, "
                        "character_coverage 0.9995 (rare characters such as CJK, emoji and '<' '>' are left out and map "
                        "to <unk>, as in Google's C4 vocabulary), byte_fallback false, num_threads 1; corpus = the 200 "
                        "captions + the 100 benchmark captions + 6000 template sentences (random.Random(0)), raw (cased, "
                        "with punctuation), like the cased C4 vocabulary",
            "ids_choice": "<pad> 0, </s> 1, <unk> 2, no <s>: the T5 / C4 SentencePiece layout that Google's English SigLIP "
                          "vocabulary (32000 pieces) has; SiglipTokenizer's defaults are eos = pad = '</s>' (id 1), "
                          "unk '<unk>'; '<pad>' (0) is never produced by SiglipTokenizer",
            "normalizer_spec": {"name": ns.name, "add_dummy_prefix": ns.add_dummy_prefix,
                                "remove_extra_whitespaces": ns.remove_extra_whitespaces,
                                "escape_whitespaces": ns.escape_whitespaces,
                                "precompiled_charsmap_bytes": len(ns.precompiled_charsmap)},
            "trainer_spec": {"model_type": "UNIGRAM", "vocab_size": ts.vocab_size, "unk_id": ts.unk_id,
                             "bos_id": ts.bos_id, "eos_id": ts.eos_id, "pad_id": ts.pad_id,
                             "byte_fallback": ts.byte_fallback, "unk_piece": ts.unk_piece,
                             "split_digits": ts.split_digits, "character_coverage": round(ts.character_coverage, 6)},
            "unknowns": "a run of consecutive characters outside the vocabulary becomes ONE <unk> (id 2) piece "
                        f"(SentencePiece merges adjacent unknowns); {unk_in_cases} of the 200 cases contain id 2",
        },
        "tokenizer": {
            "fast_tokenizer": "transformers 5.24 has no fast SigLIP tokenizer (no SiglipTokenizerFast, no converter); "
                              "Siglip2Tokenizer is a different (Gemma) tokenizer",
            "auto_tokenizer_class": type(auto_tok).__name__,
            "auto_tokenizer_note": "AutoTokenizer.from_pretrained(dir) returns the slow SentencePiece SiglipTokenizer "
                                   "(tokenizer_class in tokenizer_config.json); it and SiglipTokenizer.from_pretrained(dir) "
                                   "give the same ids as SiglipTokenizer(vocab_file=...) on all 200 cases",
            "legacy": f"SentencePieceBackend legacy = {tok.legacy} (default; not set in tokenizer_config). legacy only "
                      "matters for SentencePieceBackend._tokenize, which SiglipTokenizer overrides; with legacy true the "
                      "model's add_dummy_prefix (true) is left as trained",
            "add_prefix_space": "not a SiglipTokenizer option; the prefix '▁' is added explicitly (below)",
            "steps": [
                "tokenize(text): text = '▁' + text.replace('▁', ' ')  (SiglipTokenizer.tokenize)",
                "PreTrainedTokenizer.tokenize: split on special/added tokens ('</s>', '<unk>', with lstrip/rstrip); "
                "each other chunk goes to _tokenize",
                "_tokenize -> canonicalize_text(chunk): lower() (do_lower_case true); remove every character of "
                "string.punctuation (ASCII !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~; unicode punctuation such as “ ” ‘ ’ … — is kept; "
                "'_' is removed, not turned into a space); re.sub(r'\\s+', ' ', .); strip() (the leading '▁' is not "
                "whitespace, so it stays)",
                "sp_model.encode('<unk>' + canonical, out_type=str) and drop the first unk_token_length = "
                f"len(sp_model.encode('<unk>')) = {tok.unk_token_length} pieces (the pieces of the literal '<unk>' text)",
                "tokenize(): if the result starts with a bare '▁' followed by a special token, drop that '▁'",
                "pieces -> ids with sp_model.piece_to_id; build_inputs_with_special_tokens appends </s> (1) unless the "
                "sequence already ends with it; no <s>; padding (when asked) with </s> = 1 on the right",
            ],
            "equivalent_rule": f"on {equivalent} of 200 cases ids == sp.encode(canonicalize_text(text)) + [1] with the "
                               "SentencePiece model as trained (add_dummy_prefix true): the prefixed '▁' merges with "
                               "SentencePiece's own dummy prefix / whitespace handling",
            "normalisation_inside_sentencepiece": "precompiled nmt_nfkc charsmap (NFKC + whitespace/control mapping), then "
                                                  "remove_extra_whitespaces (strip, collapse runs), add_dummy_prefix, "
                                                  "escape spaces as '▁'; an input '▁' (U+2581) counts as a space",
            "normalize_examples": {t: sp.normalize(t) for t in ["<unk>▁ lots  of", "▁▁x", "a  b", "“x” … —", "ＡＢＣ①"]},
        },
    }
    write_json(os.path.join(d, "meta.json"), meta)
    return meta


# ---------------------------------------------------------------------------------------------
# 3) BiomedCLIP (open_clip CustomTextCLIP: timm ViT + HF BERT)
# ---------------------------------------------------------------------------------------------

BIOMED_HF_NAME = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
BIOMED_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "image_size": 64},
    "text_cfg": {"hf_model_name": BIOMED_HF_NAME, "hf_tokenizer_name": BIOMED_HF_NAME, "hf_proj_type": "mlp",
                 "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256},
}
SMALL_VIT = dict(img_size=64, embed_dim=128, depth=2, num_heads=2)
BERT_SIZES = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                  max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu")
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_TOKENIZER_CONFIG = {
    "clean_up_tokenization_spaces": True, "cls_token": "[CLS]", "do_basic_tokenize": True, "do_lower_case": True,
    "mask_token": "[MASK]", "model_max_length": 256, "never_split": None, "pad_token": "[PAD]",
    "sep_token": "[SEP]", "strip_accents": None, "tokenize_chinese_chars": True,
    "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
}
BERT_SPECIAL_MAP = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
                    "unk_token": "[UNK]"}


def train_wordpiece(corpus, size=1000, min_count=2):
    """A deterministic WordPiece vocabulary (tokenizers' own trainer orders ties by hash and differs
    from run to run): BERT's uncased normaliser and pre-tokeniser from `tokenizers`, the characters
    seen at least `min_count` times (word-initial form and '##' form), then BPE-style merges of the
    most frequent adjacent pair (ties: smallest pair) until `size` entries, as tokenizers'
    WordPieceTrainer does."""
    norm = tokenizers.normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                 strip_accents=None, lowercase=True)
    pre = tokenizers.pre_tokenizers.BertPreTokenizer()
    counts = Counter(w for text in corpus for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    words = {w: [w[0]] + ["##" + ch for ch in w[1:]] for w in counts}
    symbols = Counter()
    for w, syms in words.items():
        for s in syms:
            symbols[s] += counts[w]
    alphabet = sorted(s for s, c in symbols.items() if c >= min_count)
    words = {w: syms for w, syms in words.items() if all(symbols[s] >= min_count for s in syms)}
    vocab = BERT_SPECIAL + alphabet
    known = set(vocab)
    while len(vocab) < size:
        pairs = Counter()
        for w, syms in words.items():
            for pair in zip(syms, syms[1:]):
                pairs[pair] += counts[w]
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merged = a + b[2:]
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        for syms in words.values():
            i = 0
            while i < len(syms) - 1:
                if syms[i] == a and syms[i + 1] == b:
                    syms[i:i + 2] = [merged]
                i += 1
    return vocab


@contextlib.contextmanager
def small_timm_models(**overrides):
    """Make timm.create_model (as open_clip's TimmModel calls it) build a reduced model of the named
    family: same architecture code and names, smaller sizes."""
    original = timm.create_model

    def create(name, *args, **kwargs):
        return original(name, *args, **{**kwargs, **overrides})

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = original


def build_biomedclip(bert_dir):
    """open_clip's CustomTextCLIP from BIOMED_CFG, with the HF name pointing at a local BertConfig
    directory (HFTextEncoder then calls AutoModel.from_config(config, add_pooling_layer=False), the
    path open_clip takes when a full CLIP checkpoint is loaded) and a small timm trunk."""
    cfg = copy.deepcopy(BIOMED_CFG)
    cfg["text_cfg"]["hf_model_name"] = bert_dir
    cfg["text_cfg"]["hf_model_pretrained"] = False
    with small_timm_models(**SMALL_VIT):
        return open_clip.model.CustomTextCLIP(**cfg)


def expected_biomedclip_keys(vit_depth, bert_layers):
    keys = ["logit_scale", "visual.trunk.cls_token", "visual.trunk.pos_embed", "visual.trunk.patch_embed.proj.weight",
            "visual.trunk.patch_embed.proj.bias"]
    for i in range(vit_depth):
        for k in ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                  "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                  "mlp.fc2.weight", "mlp.fc2.bias"]:
            keys.append(f"visual.trunk.blocks.{i}.{k}")
    keys += ["visual.trunk.norm.weight", "visual.trunk.norm.bias", "visual.head.proj.weight"]
    emb = "text.transformer.embeddings."
    keys += [emb + "position_ids", emb + "word_embeddings.weight", emb + "position_embeddings.weight",
             emb + "token_type_embeddings.weight", emb + "LayerNorm.weight", emb + "LayerNorm.bias"]
    for i in range(bert_layers):
        for k in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"]:
            keys += [f"text.transformer.encoder.layer.{i}.{k}.weight", f"text.transformer.encoder.layer.{i}.{k}.bias"]
    keys += ["text.proj.0.weight", "text.proj.2.weight"]
    return keys


def make_biomedclip(texts, corpus):
    from transformers import BertConfig
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    d = os.path.join(OUT, "biomedclip")
    os.makedirs(d, exist_ok=True)
    vocab = train_wordpiece(corpus)
    assert vocab == train_wordpiece(corpus), "WordPiece training is not deterministic"
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocab))
    write_json(os.path.join(d, "tokenizer_config.json"), BERT_TOKENIZER_CONFIG)
    write_json(os.path.join(d, "special_tokens_map.json"), BERT_SPECIAL_MAP)
    config = {"model_cfg": BIOMED_CFG, "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}
    write_json(os.path.join(d, "open_clip_config.json"), config)

    with tempfile.TemporaryDirectory() as bert_dir:
        bert_config = BertConfig(vocab_size=len(vocab), pad_token_id=0, **BERT_SIZES)
        bert_config.save_pretrained(bert_dir)
        torch.manual_seed(0)
        model = randomise(build_biomedclip(bert_dir), seed=3)
        state = OrderedDict()
        for k, v in model.state_dict().items():
            if k == "text.transformer.embeddings.word_embeddings.weight":
                # the stale buffer transformers < 4.31 saved (persistent position_ids), as in the real file
                state["text.transformer.embeddings.position_ids"] = torch.arange(512, dtype=torch.int64)[None]
            state[k] = v.clone()
        assert list(state) == expected_biomedclip_keys(2, 2), sorted(set(state) ^ set(expected_biomedclip_keys(2, 2)))
        ckpt = os.path.join(d, "open_clip_pytorch_model.bin")
        torch.save(state, ckpt)

        # Reload with open_clip's checkpoint loader (it drops position_ids) into a fresh model.
        model = build_biomedclip(bert_dir)
        open_clip.load_checkpoint(model, ckpt, strict=True)
        model.eval()
    bert = model.text.transformer
    assert not hasattr(bert, "pooler") or bert.pooler is None
    assert model.visual.trunk.global_pool == "token" and isinstance(model.visual.trunk.norm_pre, nn.Identity)
    assert isinstance(model.visual.trunk.fc_norm, nn.Identity) and isinstance(model.visual.trunk.head, nn.Identity)

    tokenizer = open_clip.get_tokenizer(f"local-dir:{d}")  # open_clip's HFTokenizer on the local files
    assert isinstance(tokenizer, open_clip.tokenizer.HFTokenizer) and tokenizer.context_length == 256
    fast = tokenizer.tokenizer
    slow = BertTokenizerLegacy(vocab_file=os.path.join(d, "vocab.txt"), do_lower_case=True)

    torch.manual_seed(30)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), BlockRecorder(model.visual.trunk.blocks) as rec:
        image_embeds = model.encode_image(pixel_values, normalize=False)
    vision_hs = rec.stacked()

    padded = tokenizer([CAPTION])  # [1, 256], [PAD] = 0
    L = int((padded[0] != 0).sum())
    ids = padded[:, :L].clone()
    assert int(ids[0, 0]) == 2 and int(ids[0, -1]) == 3
    with torch.no_grad():
        with BlockRecorder(bert.encoder.layer) as trec:
            text_embeds = model.encode_text(ids, normalize=False)
        emb256 = model.encode_text(padded, normalize=False)
        hf_out = bert(input_ids=ids, output_hidden_states=True)
    text_hs = trec.stacked()
    assert max_diff(text_embeds, emb256) < 1e-6, max_diff(text_embeds, emb256)
    assert max_diff(text_hs, torch.stack(hf_out.hidden_states)) == 0
    shapes = save_reference(d, pixel_values, ids, vision_hs, text_hs, image_embeds, text_embeds)

    cases, slow_differs, clean_changes = [], [], []
    for i, t in enumerate(texts):
        cleaned = tokenizer.clean_fn(t)
        got = fast(cleaned).input_ids
        padded_row = tokenizer([t])[0].tolist()
        assert padded_row[:len(got)] == got[:256] and not any(padded_row[len(got):])
        if slow(cleaned).input_ids != got:
            slow_differs.append({"index": i, "text": t, "fast": got, "slow": slow(cleaned).input_ids})
        if fast(t).input_ids != got:
            clean_changes.append({"index": i, "text": t, "cleaned": cleaned})
        cases.append({"text": t, "ids": got})
    write_json(os.path.join(d, "tokenizer_cases.json"), cases)

    meta = {
        "family": "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 layout (open_clip CustomTextCLIP: timm ViT + HF BERT)",
        "versions": versions(),
        "files": {
            "open_clip_config.json": "the real file's model_cfg with image_size 64; preprocess_cfg as the real one "
                                     "(OpenAI mean/std only: open_clip defaults bicubic resize, shortest-side, centre crop)",
            "open_clip_pytorch_model.bin": "torch.save(OrderedDict state_dict) (zip pickle, open_clip names) plus the stale "
                                           "'text.transformer.embeddings.position_ids' int64 [1,512] = arange(512) entry; "
                                           "open_clip.load_checkpoint deletes that key before load_state_dict",
            "vocab.txt, tokenizer_config.json, special_tokens_map.json": "BERT WordPiece tokenizer files (no tokenizer.json)",
            "no config.json": "BERT sizes must come from the weights: vocab = word_embeddings rows, hidden = its columns, "
                              "layers = count of encoder.layer.{i}, intermediate = intermediate.dense rows, positions = "
                              "position_embeddings rows, type vocab = token_type_embeddings rows; heads are not stored "
                              "(here 2; the real BiomedBERT-base has 12 with hidden 768, head_dim 64)",
        },
        "construction": "open_clip.model.CustomTextCLIP(**model_cfg) with (a) timm.create_model wrapped to add "
                        f"{SMALL_VIT} to the 'vit_base_patch16_224' call TimmModel makes, and (b) hf_model_name pointing "
                        "at a temporary directory holding only a BertConfig (HFTextEncoder: AutoConfig.from_pretrained -> "
                        "AutoModel.from_config(config, add_pooling_layer=False), hf_model_pretrained false)",
        "sizes": {
            "image_size": 64, "patch_size": 16, "grid": 4, "vision_tokens": 17, "vision_width": 128,
            "vision_layers": 2, "vision_heads": 2, "vision_mlp": 512, "text_vocab": len(vocab), "text_hidden": 128,
            "text_layers": 2, "text_heads": 2, "text_intermediate": 256, "text_max_position_embeddings": 512,
            "text_type_vocab_size": 2, "text_context_length": 256, "embed_dim": 24, "text_proj_hidden": (128 + 24) // 2,
        },
        "bert_config": bert_config.to_diff_dict() | {"layer_norm_eps": bert_config.layer_norm_eps,
                                                    "hidden_act": bert_config.hidden_act},
        "attn_implementation": bert.config._attn_implementation,
        "seeds": {"construction": 0, "noise": 3, "pixel_values": 30},
        "weight_noise": f"default init + {NOISE} * N(0,1) on every parameter",
        "caption": CAPTION,
        "input_ids": ids[0].tolist(),
        "input_ids_note": "open_clip.get_tokenizer('local-dir:biomedclip') (HFTokenizer, 256, [PAD]=0 padded) with the "
                          "padding removed; the text embedding of these unpadded ids (attention mask all ones) equals "
                          "open_clip's from the 256-padded ids with mask ids != 0 (asserted to 1e-6)",
        "reference_shapes": shapes,
        "hidden_states": "vision: index 0 = [cls_token; patches] + pos_embed (norm_pre is Identity: no pre-norm), T = 17; "
                         "text: index 0 = BERT embeddings output (word + position + token_type[0], then embeddings.LayerNorm); "
                         "all before the final trunk norm (vision; BERT has none)",
        "forward": {
            "vision": "patch_embed.proj conv 16x16 stride 16 with bias -> flatten row-major -> [cls; patches] + pos_embed "
                      "(pos_embed [1,17,D] covers the class token) -> blocks (x + attn(norm1 x); x + mlp(norm2 x); no "
                      "layer scale) -> trunk.norm on all tokens -> token 0 (global_pool 'token', fc_norm Identity, "
                      "timm head Identity) -> head.proj Linear(128, 24, bias=False) (head.drop is Dropout(0))",
            "vision_attention": "qkv Linear(D, 3D, bias) split as [3, heads, head_dim] (q rows first), scale head_dim^-0.5, "
                                "proj Linear(D, D, bias)",
            "vision_mlp": "fc1 -> nn.GELU (exact erf) -> fc2",
            "timm_pool": "'' in the config means TimmModel keeps the network default pool ('token') because proj is "
                         "'linear' (reset_classifier(0) without global_pool)",
            "text": "BERT (post-norm): attention mask = ids != pad_token_id (0); token_type_ids not passed -> all 0 "
                    "(BertEmbeddings' zero buffer); each layer: h = LN(x + dense(attn(x))); out = LN(h + dense(gelu(dense(h))))",
            "text_attention": "separate query/key/value Linear with bias, scale head_dim^-0.5, additive mask on padded keys",
            "text_pooling": "cls_last_hidden_state_pooler: last_hidden_state[:, 0] (the [CLS] token); no BERT pooler "
                            "(no pooler.dense weights; the tanh pooler is NOT used)",
            "text_proj": f"proj_type 'mlp': Linear(128, {(128 + 24) // 2}, bias=False) -> nn.GELU (exact erf) -> "
                         f"Linear({(128 + 24) // 2}, 24, bias=False); hidden = (d_model + embed_dim) // 2",
            "logit_scale": "scalar (shape []) log(1/0.07) + noise, no logit_bias",
        },
        "layer_norm_eps": layer_norm_eps(model),
        "activations": activations(model),
        "checkpoint_tensors": grouped_shapes(torch.load(ckpt, weights_only=True)),
        "quirks": [
            "HFTextEncoder given a config OBJECT (config=...) calls AutoModel.from_config(config) and so builds a BERT "
            "pooler (text.transformer.pooler.dense.*) the real checkpoint lacks; the real path (hf_model_name, "
            "AutoConfig.from_pretrained, add_pooling_layer = pooler_type == 'cls_pooler' = false) has none, which "
            "is why the script points hf_model_name at a local config directory",
            "TimmModel does not pass vision_cfg.image_size to timm: 'vit_base_patch16_224' is built at 224 (grid 14, "
            "pos_embed [1,197,768]) in the real model; here img_size 64 is injected, so pos_embed is [1,17,128]; "
            "a loader should take the grid from pos_embed (or image_size) and the width/depth from the weights",
            "timm_pool '' keeps timm's default 'token' pooling (proj 'linear' path calls reset_classifier(0) without "
            "a pool argument); with timm_proj 'linear' the projection is head.proj without bias",
            "open_clip.load_checkpoint removes 'text.transformer.embeddings.position_ids' (hasattr on a dotted name is "
            "always false), so the entry is ignored; a loader must skip this int64 tensor",
            "no token_type_ids are passed: all tokens use token_type_embeddings row 0",
            "open_clip's HFTokenizer does not lower-case; BERT's normaliser does (and strips accents)",
        ],
        "real_checkpoint_key_names": "visual.trunk.* (timm ViT names), visual.head.proj.weight, text.transformer.* (HF BertModel "
                                     "without pooler, including embeddings.position_ids), text.proj.0.weight, "
                                     "text.proj.2.weight, logit_scale: the names here are asserted to be exactly these",
        "wordpiece": {
            "training": "train_wordpiece() in the script (deterministic; tokenizers' WordPieceTrainer breaks ties by hash "
                        "order): tokenizers' BertNormalizer(lowercase, strip accents, CJK spacing, clean text) + "
                        "BertPreTokenizer on the same corpus as SigLIP's SentencePiece; alphabet = characters seen >= 2 "
                        "times (word-initial and '##' forms, so rarer characters are [UNK]); then BPE-style merges of the "
                        "most frequent adjacent pair (ties: smallest pair) until 1000 entries",
            "entries": len(vocab),
            "special_ids": {t: vocab.index(t) for t in BERT_SPECIAL},
            "layout_note": "BiomedBERT's own vocab starts [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4), unlike bert-base-uncased "
                           "([PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103)",
        },
        "tokenizer": {
            "auto_tokenizer_class": type(fast).__name__,
            "auto_tokenizer_note": "in transformers 5 BertTokenizer is the tokenizers-backed (fast) class "
                                   "(BertTokenizerFast is an alias); the slow python one is BertTokenizerLegacy",
            "open_clip_hftokenizer": "HFTokenizer(clean='whitespace'): text -> ftfy.fix_text -> html.unescape twice -> strip "
                                     "-> ' '.join(text.split()) (no lower-casing by open_clip) -> tokenizer(..., "
                                     "max_length=256, padding='max_length', truncation=True); strip_sep_token false",
            "bert_normaliser": "BertNormalizer(clean_text: drop control chars / U+FFFD, whitespace -> ' '; handle_chinese_chars: "
                               "spaces around CJK ideographs; strip_accents follows lowercase (NFD then drop Mn); lowercase) -> "
                               "BertPreTokenizer (split on whitespace and on each punctuation char) -> WordPiece (greedy "
                               "longest-match-first, '##' continuation, a word with any unmatched part becomes one [UNK], "
                               "max_input_chars_per_word 100) -> [CLS] ... [SEP]",
            "slow_vs_fast_differences": slow_differs,
            "cases_changed_by_open_clip_cleaning": clean_changes,
        },
    }
    write_json(os.path.join(d, "meta.json"), meta)
    return meta


if __name__ == "__main__":
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    texts = case_texts()
    assert len(texts) == 200
    corpus = training_corpus()
    make_openclip(texts)
    make_siglip(texts, corpus)
    make_biomedclip(texts, corpus)
    total = 0
    for root, _, files in sorted(os.walk(OUT)):
        for f in sorted(files):
            size = os.path.getsize(os.path.join(root, f))
            total += size
            print(f"{os.path.relpath(os.path.join(root, f), OUT):45s} {size:>10,d}")
    print(f"{'total':45s} {total:>10,d}")
