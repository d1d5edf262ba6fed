"""consent-gate nodes for ComfyUI: put ``Consent Gate Check`` in front of a face node.

ComfyUI imports this folder (``custom_nodes/comfyui-consent-gate``) and reads
``NODE_CLASS_MAPPINGS``. Configuration is by environment variables, see README.md.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
