"""The glue that installs GenAffect's engine on ComfyUI models: one module per engine module it hosts
(``consistent_attention`` hosts ``models/consistent_attention.py``, and so on), plus ``patching``, the
helpers they share. Node files import from here; nothing here imports a node file."""
