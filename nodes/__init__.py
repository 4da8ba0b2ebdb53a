"""ComfyUI's skin over ``models/``: node classes grouped by stage, and the glue to ComfyUI itself."""

from .arc2face_nodes import (
    GenAffectApplyExpressionAdapter,
    GenAffectApplyReferenceAdapter,
    GenAffectArc2FaceConditioning,
    GenAffectArc2FaceLoader,
)
from .conditioning_nodes import GenAffectConditioningIntensity
from .consistent_nodes import GenAffectConsistentAttention, GenAffectConsistentBatchSampler
from .dit_nodes import GenAffectApplyDiTAdapter, GenAffectDiTAdapterLoader, GenAffectDiTSampler
from .estimation_nodes import GenAffectEstimateExpression, GenAffectExpressionEstimatorLoader
from .evaluation_nodes import (
    GenAffectExpressionNetworkLoader,
    GenAffectExpressionSheet,
    GenAffectFaceMetrics,
    GenAffectScoreExpressions,
    GenAffectSelectBest,
)
from .expression_nodes import (
    GenAffectExpressionEditor,
    GenAffectExpressionInterpolate,
    GenAffectExpressionMix,
    GenAffectExpressionPreset,
    GenAffectExpressionToPrompt,
    GenAffectHeadTurns,
)
from .face_drawing_nodes import GenAffectDrawExpressions
from .face_nodes import GenAffectAlignFace, GenAffectExtractIdentity, GenAffectFaceAnalyzerLoader
from .guard_nodes import GenAffectSamplingGuard
from .job_nodes import GenAffectSaveSheetJob, GenAffectSheetJob
from .mapping_nodes import GenAffectApplyExpressionMapping, GenAffectFitExpressionMapping
from .model_check_node import GenAffectCheckModels
from .multiface_nodes import GenAffectCropFaces, GenAffectFindFaces, GenAffectStitchFaces
from .number_inputs import refuse_bad_numbers
from .track_nodes import GenAffectExpressionTrack
from .warp_nodes import GenAffectWarpExpression

# Every node once, in menu order, with the name ComfyUI shows.
NODES = (
    (GenAffectFaceAnalyzerLoader, "GenAffect Face Analyzer Loader"),
    (GenAffectExtractIdentity, "GenAffect Extract Identity"),
    (GenAffectAlignFace, "GenAffect Align Face"),
    (GenAffectFindFaces, "GenAffect Find Faces"),
    (GenAffectCropFaces, "GenAffect Crop Faces"),
    (GenAffectStitchFaces, "GenAffect Stitch Faces"),
    (GenAffectCheckModels, "GenAffect Check Models"),
    (GenAffectExpressionPreset, "GenAffect Expression Preset"),
    (GenAffectExpressionEditor, "GenAffect Expression Editor"),
    (GenAffectExpressionInterpolate, "GenAffect Expression Interpolate"),
    (GenAffectExpressionMix, "GenAffect Expression Mix"),
    (GenAffectHeadTurns, "GenAffect Head Turns"),
    (GenAffectExpressionToPrompt, "GenAffect Expression To Prompt"),
    (GenAffectExpressionEstimatorLoader, "GenAffect Expression Estimator Loader"),
    (GenAffectEstimateExpression, "GenAffect Estimate Expression"),
    (GenAffectWarpExpression, "GenAffect Warp Expression"),
    (GenAffectExpressionTrack, "GenAffect Expression Track"),
    (GenAffectFitExpressionMapping, "GenAffect Fit Expression Mapping"),
    (GenAffectApplyExpressionMapping, "GenAffect Apply Expression Mapping"),
    (GenAffectDrawExpressions, "GenAffect Draw Expressions"),
    (GenAffectExpressionNetworkLoader, "GenAffect Expression Network Loader"),
    (GenAffectFaceMetrics, "GenAffect Face Metrics"),
    (GenAffectExpressionSheet, "GenAffect Expression Sheet"),
    (GenAffectSelectBest, "GenAffect Select Best"),
    (GenAffectSaveSheetJob, "GenAffect Save Sheet Job"),
    (GenAffectScoreExpressions, "GenAffect Score Expressions"),
    (GenAffectConditioningIntensity, "GenAffect Conditioning Intensity"),
    (GenAffectConsistentAttention, "GenAffect Consistent Attention"),
    (GenAffectConsistentBatchSampler, "GenAffect Consistent Batch Sampler"),
    (GenAffectSamplingGuard, "GenAffect Sampling Guard"),
    (GenAffectSheetJob, "GenAffect Sheet Job"),
    (GenAffectArc2FaceLoader, "GenAffect Arc2Face Loader"),
    (GenAffectArc2FaceConditioning, "GenAffect Arc2Face Conditioning"),
    (GenAffectApplyExpressionAdapter, "GenAffect Apply Expression Adapter"),
    (GenAffectApplyReferenceAdapter, "GenAffect Apply Reference Adapter"),
    (GenAffectDiTAdapterLoader, "GenAffect DiT Adapter Loader"),
    (GenAffectApplyDiTAdapter, "GenAffect Apply DiT Adapter"),
    (GenAffectDiTSampler, "GenAffect DiT Sampler"),
)

# Every node checks its number inputs when it runs: NaN and linked values pass ComfyUI's range check (number_inputs.py).
NODE_CLASS_MAPPINGS = {cls.__name__: refuse_bad_numbers(cls) for cls, _ in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: name for cls, name in NODES}
