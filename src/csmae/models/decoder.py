"""MAE-style decoders for cross-sensor reconstruction.

A decoder body takes one source sensor's visible tokens (CLS first, kept tokens in shuffle
order), projects them to the decoder width, fills the masked positions with a learnable mask
token, restores the original token order, adds the fixed 2-D sin-cos table, runs its blocks and
a LayerNorm. A per-target linear head maps each token to the target sensor's patch pixels.

How bodies are shared is data (:data:`DECODER_LAYOUTS`): ``per_target`` = one body per target
sensor (fed by every source), ``shared`` = one body for every target. A body runs once per
source sensor, however many targets read it (heads are cheap), and sources with equal token
counts run through a body as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from csmae.models.config import ModelConfig
from csmae.models.layers import init_weights, sincos_2d_table, vit_blocks

#: decoder_sharing -> (target sensor -> name of the body that decodes it).
DECODER_LAYOUTS: dict[str, Callable[[str], str]] = {
    "per_target": lambda target: target,
    "shared": lambda target: "shared",
}


class DecoderBody(nn.Module):
    """Visible tokens (N, 1+K, D) + ids_restore (N, L) -> decoded patch tokens (N, L, D_dec)."""

    def __init__(self, *, in_dim: int, config: ModelConfig):
        super().__init__()
        c = config
        self.embed = nn.Linear(in_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.blocks = vit_blocks(
            depth=c.decoder_depth,
            dim=c.decoder_embed_dim,
            num_heads=c.decoder_num_heads,
            mlp_ratio=c.mlp_ratio,
            eps=c.decoder_norm_eps,
        )
        self.norm = nn.LayerNorm(c.decoder_embed_dim, eps=c.decoder_norm_eps)
        grid = c.img_size // c.patch_size
        self.register_buffer("pos_embed", sincos_2d_table(c.decoder_embed_dim, grid)[None], persistent=False)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.embed(tokens)  # (N, 1+K, Dd)
        n, k1, dim = x.shape
        length = ids_restore.shape[1]
        fill = self.mask_token.to(x.dtype).expand(n, length + 1 - k1, dim)
        seq = torch.cat([x[:, 1:], fill], dim=1)  # (N, L, Dd) in shuffle order
        seq = torch.gather(seq, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # original order
        x = torch.cat([x[:, :1], seq], dim=1) + self.pos_embed  # type: ignore[operator]  # (N, 1+L, Dd)
        x = self.norm(self.blocks(x))
        return x[:, 1:]  # (N, L, Dd), CLS dropped


class CrossSensorDecoder(nn.Module):
    """Decoder bodies + a pixel head per target sensor, laid out by ``config.decoder_sharing``."""

    def __init__(self, config: ModelConfig, channels: Mapping[str, int]):
        super().__init__()
        if config.decoder_sharing not in DECODER_LAYOUTS:
            raise ValueError(
                f"no decoder for decoder_sharing {config.decoder_sharing!r}; "
                f"layouts: {sorted(DECODER_LAYOUTS)}"
            )
        self.route = {t: DECODER_LAYOUTS[config.decoder_sharing](t) for t in channels}
        self.bodies = nn.ModuleDict(
            {
                name: DecoderBody(in_dim=config.embed_dim, config=config)
                for name in dict.fromkeys(self.route.values())
            }
        )
        p2 = config.patch_size**2
        self.heads = nn.ModuleDict(
            {t: nn.Linear(config.decoder_embed_dim, p2 * ch) for t, ch in channels.items()}
        )
        init_weights(self)
        for body in self.bodies.values():
            nn.init.normal_(body.mask_token, std=0.02)  # type: ignore[arg-type]

    def forward(
        self,
        tokens: Mapping[str, Tensor],
        ids_restore: Mapping[str, Tensor],
        pairs: Sequence[tuple[str, str]],
    ) -> dict[tuple[str, str], Tensor]:
        """Predict (N, L, p*p*C_tgt) patches for every (source, target) pair."""
        out: dict[tuple[str, str], Tensor] = {}
        by_body: dict[str, list[tuple[str, str]]] = {}
        for src, tgt in pairs:
            by_body.setdefault(self.route[tgt], []).append((src, tgt))
        for body_name, body_pairs in by_body.items():
            hidden = self._run_body(
                self.bodies[body_name],  # type: ignore[arg-type]
                tokens,
                ids_restore,
                list(dict.fromkeys(src for src, _ in body_pairs)),
            )
            for src, tgt in body_pairs:
                out[(src, tgt)] = self.heads[tgt](hidden[src])
        return out

    @staticmethod
    def _run_body(
        body: DecoderBody, tokens: Mapping[str, Tensor], ids_restore: Mapping[str, Tensor], sources: list[str]
    ) -> dict[str, Tensor]:
        """Run ``body`` on each source; sources with equal token counts share one batch."""
        groups: dict[tuple[int, ...], list[str]] = {}
        for s in sources:
            groups.setdefault(tuple(tokens[s].shape[1:]), []).append(s)
        hidden: dict[str, Tensor] = {}
        for names in groups.values():
            if len(names) == 1:
                hidden[names[0]] = body(tokens[names[0]], ids_restore[names[0]])
                continue
            h = body(torch.cat([tokens[s] for s in names]), torch.cat([ids_restore[s] for s in names]))
            for s, part in zip(names, h.split([tokens[s].shape[0] for s in names])):
                hidden[s] = part
        return hidden
