"""LiteNeXt (Tran et al., arXiv 2405.15779): LGEMixer encoder, residual bottleneck, GCF decoder.

Implemented from the project specification (spec §1). With the defaults the network has
711,201 parameters and 0.412 G convolution/linear MACs for a 1×3×256×256 input, counted in the
paper's order of the decoder (``fused_decoder=False``). The default fused order computes the same
function with 0.389 G MACs and without the 128-channel maps at H/2 that dominate CPU time;
:meth:`LiteNeXt.reparameterize` gives the inference-only deploy form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from litenext_monai.networks.blocks import ConvNormAct, DownStage, LGEMixer, ProjectUp, ResidualBlock

__all__ = ["LiteNeXtEncoder", "GenerateContext", "LiteNeXt", "raise_malloc_thresholds"]

#: Input height and width must be multiples of this (the stem and three 2×2 poolings).
SIZE_DIVISOR = 16
#: Row tiles of the deploy form's GCF value projections hold at most this many elements (1 MiB
#: in float32), instead of 8-MiB D-channel maps at H/2 for a 256² image (see ProjectUp.project_linear).
TILE_ELEMENTS = 2**18


#: glibc's ceiling for its dynamic mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
_GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20
_malloc_thresholds_raised = False


def raise_malloc_thresholds() -> None:
    """Let glibc keep freed activation memory instead of returning it to the OS (once per process).

    glibc serves allocations above its mmap threshold (128 KiB at start) with fresh ``mmap``
    pages and trims the heap top when more than twice that threshold is free, so every forward
    pass of a network with many MiB-sized activations page-faults its memory in again (about
    6,000 minor faults per 256² LiteNeXt inference, measured). glibc raises both thresholds by
    itself when it frees an mmapped block (mallopt(3), "dynamic mmap threshold"); freeing one
    untouched block just under its 32-MiB ceiling sets them to 32/64 MiB, the effect of
    ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` without environment variables. Costs no
    memory (the block is never touched) and does nothing on other allocators.
    """
    global _malloc_thresholds_raised
    if not _malloc_thresholds_raised:
        block = torch.empty(_GLIBC_MMAP_THRESHOLD_MAX - 2**16, dtype=torch.uint8)
        del block
        _malloc_thresholds_raised = True


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """GAP + GMP of a ``B, C, H, W`` map, shaped ``B, C, 1, 1`` (the paper's pooled descriptor)."""
    return F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)


class LiteNeXtEncoder(nn.Module):
    """Stem and four LGEMixer stages (the paper's feature extractor F_θ).

    Args:
        in_channels: image channels.
        base_channels: width ``C`` of stage 1; stages are ``C, 2C, 4C, 8C`` wide.
        kernel_size: depth-wise kernel of every LGEMixer.

    Returns (forward):
        four maps ``e1..e4`` at H/2, H/4, H/8 and H/16 with ``C, 2C, 4C, 8C`` channels.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(4)]
        self.in_channels = in_channels
        self.feature_channels = tuple(widths)
        # The "patch partition" stem: 2×2 convolution with stride 2, no padding.
        self.stem = ConvNormAct(in_channels, widths[0], kernel_size=2, stride=2)
        self.stages = nn.ModuleList([LGEMixer(widths[0], kernel_size)])
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            self.stages.append(nn.Sequential(DownStage(c_in, c_out), LGEMixer(c_out, kernel_size)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        # Channels-last (NHWC memory) throughout: every channel LayerNorm then normalises
        # contiguous pixel vectors without a transposing copy (see ChannelLayerNorm).
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class _ScaleKey(nn.Sequential):
    """Key (or query) MLP of one scale: 1×1 conv c→c, GELU, 1×1 conv c→D, on the pooled descriptor."""

    def __init__(self, in_channels: int, context_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 1), nn.GELU(), nn.Conv2d(in_channels, context_channels, 1)
        )


class GenerateContext(nn.Module):
    """GCF module ("Generate Context", spec §1.3): channel-wise gated fusion of four scales at H/2.

    For every encoder map ``e_i`` a value ``V_i = ProjectUp(c_i→D, s_i)(e_i)`` and a key
    ``k_i = MLP(GAP(e_i) + GMP(e_i))`` are formed; the bottleneck output ``d4`` gives the decoder
    value ``V_d`` and the query ``q``. Scores ``a_i = W_s[k_i; q] + b_s`` share one linear layer;
    ``α = softmax_i(a_i)`` runs across the four scales separately for each channel, and the output
    is ``concat(Σ_i α_i ⊙ V_i, V_d)`` with ``2D`` channels.

    Args:
        feature_channels: channels ``c_1..c_4`` of the encoder maps.
        context_channels: ``D`` (``8C`` = 128 in the paper).
    """

    def __init__(self, feature_channels: Sequence[int], context_channels: int) -> None:
        super().__init__()
        scales = [2**i for i in range(len(feature_channels))]
        self.values = nn.ModuleList(
            [ProjectUp(c, context_channels, s) for c, s in zip(feature_channels, scales)]
        )
        self.keys = nn.ModuleList([_ScaleKey(c, context_channels) for c in feature_channels])
        self.decoder_value = ProjectUp(context_channels, context_channels, scales[-1])
        self.query = _ScaleKey(context_channels, context_channels)
        self.score = nn.Linear(2 * context_channels, context_channels)
        # Set by fold_scores (deploy form only).
        self.key_scores: nn.ModuleList | None = None
        self.query_score: nn.Module | None = None

    def scale_weights(self, features: list[torch.Tensor], decoded: torch.Tensor) -> torch.Tensor:
        """Per-image, per-channel weights ``α`` of the scales, shaped ``B, scales, D`` (softmax over scales)."""
        scores = []
        if self.key_scores is None:
            query = self.query(global_pool(decoded)).flatten(1)
            for i, key_mlp in enumerate(self.keys):
                key = key_mlp(global_pool(features[i])).flatten(1)
                scores.append(self.score(torch.cat([key, query], dim=1)))
        else:
            # Deploy form: the score layer is folded into the key and query MLPs (fold_scores).
            query = self.query_score(global_pool(decoded)).flatten(1)
            for i, key_mlp in enumerate(self.key_scores):
                scores.append(key_mlp(global_pool(features[i])).flatten(1) + query)
        return torch.softmax(torch.stack(scores, dim=1), dim=1)

    @torch.no_grad()
    def fold_scores(self) -> None:
        """Fold the shared score layer into the last 1×1 convolution of every key and of the query.

        ``a_i = W_s[k_i; q] + b_s = (W_k W2_i) h_i + W_k b2_i + (W_q W2_q) h_q + W_q b2_q + b_s`` with
        ``W_s = [W_k, W_q]``: exact linear algebra. The folded MLPs become :attr:`key_scores` and
        :attr:`query_score` (``a_i = key_scores[i] + query_score``), and ``keys``, ``query`` and
        ``score`` are removed, so no training-form ``state_dict`` entry can load into a folded
        layer by name. Used by the deploy form only; a second call does nothing.
        """
        if self.key_scores is not None:
            return
        d = self.score.out_features
        w_key, w_query = self.score.weight[:, :d], self.score.weight[:, d:]

        def folded(mlp: nn.Sequential, w_s: torch.Tensor, b_s: torch.Tensor | None) -> nn.Sequential:
            last = mlp[2]
            conv = nn.Conv2d(last.in_channels, d, 1).to(last.weight)
            conv.weight.copy_((w_s @ last.weight.flatten(1)).view(d, -1, 1, 1))
            conv.bias.copy_(w_s @ last.bias + (b_s if b_s is not None else 0.0))
            return nn.Sequential(mlp[0], mlp[1], conv)

        self.key_scores = nn.ModuleList([folded(mlp, w_key, None) for mlp in self.keys])
        self.query_score = folded(self.query, w_query, self.score.bias)
        self.keys, self.query, self.score = None, None, None

    def forward(self, features: list[torch.Tensor], decoded: torch.Tensor) -> torch.Tensor:
        """The paper's order: ``concat(Σ_i α_i ⊙ V_i, V_d)``, ``2D`` channels at the resolution of ``e1``."""
        weights = self.scale_weights(features, decoded)
        # Accumulate scale by scale: a stacked 4×D×H/2×W/2 tensor would dominate peak memory.
        context = weights[:, 0, :, None, None] * self.values[0](features[0])
        for i, value_proj in enumerate(self.values):
            if i > 0:
                context = context + weights[:, i, :, None, None] * value_proj(features[i])
        return torch.cat([context, self.decoder_value(decoded)], dim=1)


def _accumulate(terms: dict[int, torch.Tensor], scale: int, term: torch.Tensor) -> torch.Tensor:
    """``terms[scale] + term`` (in place) or ``term`` when the scale has no term yet."""
    if scale in terms:
        return terms[scale].add_(term)
    return term


def _upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=float(scale), mode="bilinear", align_corners=False)


class LiteNeXt(nn.Module):
    """LiteNeXt segmentation network: encoder → residual bottleneck → GCF → prediction head.

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported.
        in_channels: image channels (1 for grey images, 3 for RGB).
        out_channels: number of foreground logit maps (1 for binary segmentation).
        base_channels: stage-1 width ``C`` (16 in the paper); the context width is ``8C``.
        kernel_size: depth-wise kernel of the LGEMixer FarMixer (7 in the paper; the authors'
            released class defaults to 3, which gives 701,601 parameters).
        fused_decoder: compute GCF + head in the exact re-ordered form (default): the head's
            1×1 projection, weighted per image by the GCF weights ``α``, is applied to each
            scale's value at that scale's own resolution, and the 16-channel results are
            upsampled and summed; the final 1×1 classifier runs before the last ×2 upsampling.
            Same parameters and, up to float rounding, the same function and gradients as the
            paper's order (``False``), whose Conv/Linear MACs are the paper's 0.412 G; the fused
            order never builds the 128-channel upsampled values or the 256-channel concatenation.

    Returns (forward):
        logits ``B, out_channels, H, W``; no activation is applied.

    Examples::

        >>> net = LiteNeXt(spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])

    Note:
        H and W must be multiples of 16 (a 2×2 stride-2 stem and three 2×2 poolings); pad or
        resize inputs, e.g. to 256×256 as in the paper.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        base_channels: int = 16,
        kernel_size: int = 7,
        fused_decoder: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"LiteNeXt is a 2D network; spatial_dims must be 2, got {spatial_dims}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base_channels, self.kernel_size = base_channels, kernel_size  # rebuilt from model.json
        self.encoder = LiteNeXtEncoder(in_channels, base_channels, kernel_size)
        widths = self.encoder.feature_channels
        context = widths[-1]
        self.bottleneck = ResidualBlock(context)
        self.context = GenerateContext(widths, context)
        self.head_project = ProjectUp(2 * context, base_channels, 2)
        self.head = nn.Conv2d(base_channels, out_channels, 1)
        self.fused_decoder = bool(fused_decoder)
        self.deployed = False
        self.tile_elements = 0
        raise_malloc_thresholds()

    @property
    def feature_channels(self) -> int:
        """Channels of the stage-4 map ``e4`` that the SeRP projectors read (``8C``)."""
        return self.encoder.feature_channels[-1]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``B, in_channels, H, W`` with H, W multiples of 16."""
        if x.dim() != 4:
            raise ValueError(f"LiteNeXt expects a B×C×H×W tensor, got shape {tuple(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"LiteNeXt was built with in_channels={self.in_channels} but the input has "
                f"{x.shape[1]} channels (shape {tuple(x.shape)})."
            )
        h, w = int(x.shape[2]), int(x.shape[3])
        if h % SIZE_DIVISOR or w % SIZE_DIVISOR:
            good_h = -(-h // SIZE_DIVISOR) * SIZE_DIVISOR
            good_w = -(-w // SIZE_DIVISOR) * SIZE_DIVISOR
            raise ValueError(
                f"LiteNeXt needs height and width that are multiples of {SIZE_DIVISOR}, got {h}×{w}; "
                f"pad or resize the input to e.g. {good_h}×{good_w}."
            )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder maps ``[e1, e2, e3, e4]`` at H/2..H/16 (``e4`` feeds the SeRP projectors)."""
        if not torch.jit.is_scripting():
            if not torch.jit.is_tracing():
                self.check_input(x)
        return self.encoder(x)

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Bottleneck, GCF and head on the encoder maps; returns logits at the input size."""
        decoded = self.bottleneck(features[-1])
        if not self.fused_decoder:
            return self.head(self.head_project(self.context(features, decoded))).contiguous()
        return self._fused_context_head(features, decoded)

    def _fused_context_head(self, features: list[torch.Tensor], decoded: torch.Tensor) -> torch.Tensor:
        """GCF + head re-ordered exactly (see ``fused_decoder``).

        With the head projection ``W = [W_ctx, W_dec]`` (a 1×1 convolution on ``concat(Ctx, V_d)``),
        ``W·concat(Σ_i α_i ⊙ Up_i(P_i), Up_8(P_d)) = Σ_i Up_i((W_ctx diag α_i) P_i) + Up_8(W_dec P_d)``
        because bilinear upsampling acts on every channel alike and commutes with per-pixel linear
        maps; scales with the same factor share one upsampling. The classifier 1×1 convolution
        commutes with the last ×2 upsampling (its interpolation weights sum to one).
        """
        gcf = self.context
        alpha = gcf.scale_weights(features, decoded)  # B, scales, D
        project = self.head_project.project
        weight = project[0].weight.flatten(1)  # N, 2D
        d = alpha.shape[-1]
        w_ctx_t = weight[:, :d].t()  # D, N
        by_scale: dict[int, torch.Tensor] = {}
        # Tiling is shape-dependent control flow: skipped while tracing so an export stays general.
        tile = 0 if torch.jit.is_tracing() else self.tile_elements
        for i, value in enumerate(gcf.values):
            term = value.project_linear(features[i], alpha[:, i, :, None] * w_ctx_t, tile)
            by_scale[value.scale] = _accumulate(by_scale, value.scale, term)
        decoder_value = gcf.decoder_value
        term = decoder_value.project_linear(decoded, weight[:, d:].t())
        by_scale[decoder_value.scale] = _accumulate(by_scale, decoder_value.scale, term)
        summed: torch.Tensor | None = None
        for scale, term in by_scale.items():
            up = _upsample(term, scale)
            summed = up if summed is None else summed.add_(up)
        assert summed is not None
        bias = project[0].bias
        if bias is not None:
            summed += bias.view(1, -1, 1, 1)
        logits = self.head(project[2](project[1](summed)))
        return _upsample(logits, self.head_project.scale).contiguous()

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Convert this network in place to its inference-only deploy form (timm's naming).

        Exact algebra, no approximation: the GCF + head run in the fused order (see
        ``fused_decoder``), the shared score layer is folded into the key and query MLPs
        (:meth:`GenerateContext.fold_scores`), and the weights are stored channels-last. The
        logits equal the training form's up to float32 rounding (max abs difference ≤ 1e-5,
        tested). The result is for inference only: its parameters no longer load into the
        training form, and training it further is not supported. Calling it twice is a no-op.
        """
        if self.deployed:
            return
        self.context.fold_scores()
        for value in self.context.values:
            value.fold_norm()
        self.fused_decoder = True
        self.deployed = True
        self.tile_elements = TILE_ELEMENTS
        self.to(memory_format=torch.channels_last)
        self.eval()
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
