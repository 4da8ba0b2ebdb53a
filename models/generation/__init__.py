"""Generation stage: the backbone records, consistent attention, Arc2Face and its adapters, the DiT adapter
and conditioning blends - the tensors a sampler is patched with."""
