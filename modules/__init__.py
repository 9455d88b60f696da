"""attnbench's module zoo: reference implementations of CNN attention blocks behind one registry.

>>> import modules
>>> se = modules.create("se", 64)
>>> modules.list_attention("eca*")  # doctest: +SKIP
['eca', 'eca_circular', 'eca_k3']

``modules`` never imports ``suite``: the zoo is usable without the harness.
"""

from . import (  # noqa: F401  (imported to register their entries)
    bam,
    cbam,
    coordinate,
    dsan,
    eca,
    fcanet,
    gather_excite,
    gct,
    global_context,
    non_local,
    pooling,
    second_order,
    selective_kernel,
    simam,
    split_attn,
    squeeze_excite,
    srm,
    triplet,
)
from ._base import AttentionModule, Shape
from ._registry import (
    BASELINE,
    NO_OFFICIAL_CODE,
    AttentionInfo,
    BlockSelector,
    create,
    get_info,
    list_attention,
    register_attention,
    unregister_attention,
)
from .backbones import ARCHS, build_model, list_archs

__all__ = [
    "ARCHS",
    "BASELINE",
    "AttentionInfo",
    "AttentionModule",
    "BlockSelector",
    "NO_OFFICIAL_CODE",
    "Shape",
    "build_model",
    "create",
    "get_info",
    "list_archs",
    "list_attention",
    "register_attention",
    "unregister_attention",
]
