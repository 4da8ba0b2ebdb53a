"""What every node that patches a MODEL shares: it returns a patched copy, the input model unchanged."""


class ModelPatchNode:
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A patched copy of the model.",)
