"""Loading every component of Würstchen v2 from every published layout (see ``load`` and ``clip``)."""

from .clip import load_clip_text_model, load_clip_tokenizer
from .components import COMPONENTS, WEIGHT_SUFFIXES, Component
from .configs import config_from_json, infer_config
from .effnet import load_effnet_encoder, read_effnet_state_dict
from .errors import CheckpointError
from .tensors import read_state_dict
from .keys import identify_component, normalise_keys
from .load import load_decoder, load_prior, load_vqgan

__all__ = ["COMPONENTS", "WEIGHT_SUFFIXES", "CheckpointError", "Component", "config_from_json", "identify_component",
           "infer_config", "load_clip_text_model", "load_effnet_encoder", "read_effnet_state_dict", "load_clip_tokenizer", "load_decoder", "load_prior", "load_vqgan",
           "normalise_keys", "read_state_dict"]
