"""Writes tests/data/tiny-clip-pth: a tiny random CLIP saved by PyTorch as pytorch_model.bin
(torch.save zip format, as transformers' save_pretrained(safe_serialization=False) writes it),
its config.json, and reference.safetensors with HF's forward outputs for fixed inputs. GELU
(not quick_gelu) activations and a non-default eos_token_id exercise config handling.

usage: python make_tiny_pth.py OUT_DIR   (torch, transformers==4.30.2, safetensors)"""
import sys, torch
from transformers import CLIPConfig, CLIPModel
from safetensors.torch import save_file

out = sys.argv[1]
torch.manual_seed(0)
cfg = CLIPConfig(
    text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                     vocab_size=1000, max_position_embeddings=16, hidden_act="gelu"),
    vision_config=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3,
                       image_size=32, patch_size=8, hidden_act="gelu"),
    projection_dim=12)
model = CLIPModel(cfg).eval()
with torch.no_grad():
    for p in model.parameters():  # larger than the default init so every layer matters
        p.add_(0.05 * torch.randn_like(p))
model.save_pretrained(out, safe_serialization=False)
pv = torch.randn(1, 3, 32, 32)
ids = torch.tensor([[999, 5, 17, 300, 42, 998]])  # argmax = position 0: tests the pooling rule
with torch.no_grad():
    vo = model.vision_model(pixel_values=pv, output_hidden_states=True)
    to = model.text_model(input_ids=ids, output_hidden_states=True)
    ref = dict(pixel_values=pv, input_ids=ids,
               vision_hidden_states=torch.stack(vo.hidden_states), text_hidden_states=torch.stack(to.hidden_states),
               image_embeds=model.get_image_features(pixel_values=pv), text_embeds=model.get_text_features(input_ids=ids))
save_file({k: v.contiguous() for k, v in ref.items()}, f"{out}/reference.safetensors")
print(cfg.text_config.eos_token_id, sorted(model.state_dict().keys())[:3])
