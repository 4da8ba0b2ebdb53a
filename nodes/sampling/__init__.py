"""Sampling a set of images in one block: the inputs the set samplers share, the skeleton that samples rows of
the set (and, with a Sampling Guard, decodes, scores and re-samples the failures), and the guard itself."""
