"""Exporting a ``gpt`` run: ``model.safetensors`` + ``config.json`` + the tokenizer.

No other tool implements this architecture (parameter-free RMSNorm with QK-norm, relu² MLP,
logit softcap), so the export is the weights in safetensors — loadable by any safetensors
reader — with a config and a README that say exactly how to run them. The layout::

    OUT/
      config.json          {"model_type": "nanochat-gpt", "architecture": {...GPTConfig...},
                            "tokenizer": {...}, "special_tokens": {name: id}}
      model.safetensors    fp32 tensors, nanochat's names (below), vocabulary padding cut
      tokenizer/           the run's tokenizer as its plugin saves it (loadable by nanochat)
      tokenizer.json       the same as a HF `tokenizers` file, when the tokenizer has that form
      README.md            this layout and the forward pass, for someone porting the model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nanochat.plugins.gpt.model import GPT

README = """# nanochat GPT export

Weights: `model.safetensors` (fp32). Shapes use `V` = vocab_size, `C` = n_embd,
`H` = n_head, `K` = n_kv_head, `D` = head_dim, `L` = n_layer (see `config.json`).

| tensor | shape |
|---|---|
| `wte.weight` | (V, C) token embedding |
| `blocks.{i}.attn.c_q.weight` | (H*D, C) |
| `blocks.{i}.attn.c_k.weight` | (K*D, C) |
| `blocks.{i}.attn.c_v.weight` | (K*D, C) |
| `blocks.{i}.attn.c_proj.weight` | (C, H*D) |
| `blocks.{i}.mlp.c_fc.weight` | (4C, C) |
| `blocks.{i}.mlp.c_proj.weight` | (C, 4C) |
| `lm_head.weight` | (V, C) |

Forward pass (no biases; `norm(x) = x / sqrt(mean(x^2) + eps)` without weights, eps = fp32 eps):

    x = norm(wte[ids])
    for each block:
        q, k, v = c_q(norm(x)), c_k(norm(x)), c_v(norm(x))       # split into heads of D
        q, k = norm(rotary(q)), norm(rotary(k))                   # rotary base 10000, pairs
                                                                  # (i, i + D/2): [x1*cos + x2*sin,
                                                                  #  x2*cos - x1*sin]
        x = x + c_proj(causal_attention(q, k, v))                 # scale 1/sqrt(D), GQA
        x = x + mlp.c_proj(relu(mlp.c_fc(norm(x)))^2)
    logits = softcap * tanh(lm_head(norm(x)) / softcap)           # when softcap > 0

Options in `config.json` (each absent or off means the loop above as written; `L` = n_layer):

- `value_embeds` K > 0: tensors `value_embeds.{j}.weight` (V, K*D) and
  `blocks.{i}.attn.ve_lambdas` (2,). Layer i reads table i when i < K, else table i - (L - K)
  when i >= L - K; then, after splitting into heads, `v = ve_lambdas[0] * v +
  ve_lambdas[1] * value_embeds[table][ids]`.
- `layer_scalars`: `resid_lambdas` (L,) and `x0_lambdas` (L,); before block i,
  `x = resid_lambdas[i] * x + x0_lambdas[i] * x0` with `x0 = norm(wte[ids])`.
- `skip_connections`: `skip_weights` (L // 2,); the outputs of blocks 0 .. L//2 - 1 are added,
  times their weight, to the inputs of the last L // 2 blocks in mirror order (block L - 1 - j
  gets the output of block j), after the scalars above.
- `window_pattern` / `short_window`: letter i % len(pattern) of the pattern says whether layer
  i attends to the whole context (`L`) or only the last `short_window` positions including
  its own (`S`; 0 means sequence_len // 2); the last layer is always `L`.

The tokenizer is in `tokenizer/` (nanochat's format) and, when available, `tokenizer.json`.
"""


def export_gpt(model: GPT, tokenizer: Any, out: Path) -> list[Path]:
    """Write ``model`` and ``tokenizer`` to the folder ``out`` in the layout above.

    Returns:
        The files and folders written.
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    c = model.config
    tensors = {}
    for name, param in model.state_dict().items():
        value = param.detach().float().cpu()
        if name in ("wte.weight", "lm_head.weight"):
            value = value[: c.vocab_size]
        tensors[name] = value.contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "nanochat-gpt",
        "architecture": {**c.to_dict(), "rotary_base": 10000.0, "mlp": "relu2", "qk_norm": True},
        "tokenizer": {"implementation": getattr(tokenizer, "implementation", None)},
        "special_tokens": dict(tokenizer.special_tokens),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "README.md").write_text(README)
    tokenizer.save(out / "tokenizer")
    written = [out / "config.json", out / "model.safetensors", out / "tokenizer", out / "README.md"]
    hf = getattr(tokenizer, "hf", None)
    if hf is not None and hasattr(hf, "save"):
        hf.save(str(out / "tokenizer.json"))
        written.append(out / "tokenizer.json")
    return written
