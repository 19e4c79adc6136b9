"""Würstchen v2 for ComfyUI: prior (Stage C), decoder (Stage B) and Paella VQGAN (Stage A) nodes.

Importing this pack registers its model folder and nodes; it loads no model and touches no GPU.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
