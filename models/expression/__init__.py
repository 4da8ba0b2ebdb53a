"""Expression stage: the expression batch, the preset library, edits, text, estimation from photos
(MediaPipe, SMIRK) and blendshape -> FLAME mappings."""
