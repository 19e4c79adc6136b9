"""The Würstchen v2 networks, built through an injectable ``operations`` namespace (``torch.nn`` by default).

Attribute names give exactly the diffusers state-dict keys, so checkpoints load key for key.
"""

from .decoder import StageBDecoder
from .effnet import EfficientNetEncoder
from .prior import StageCPrior
from .vqgan import VQ_SCALE_FACTOR, PaellaVQ

__all__ = ["EfficientNetEncoder", "StageBDecoder", "StageCPrior", "PaellaVQ", "VQ_SCALE_FACTOR"]
