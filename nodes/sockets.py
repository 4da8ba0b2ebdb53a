"""GenAffect's own socket types, declared once: every node names its GA_ inputs and outputs through these."""

FACE_ANALYZER = "GA_FACE_ANALYZER"  # models/face/face_analyzer.FaceAnalyzer
IDENTITY = "GA_IDENTITY"  # models/face/identity.Identity
EXPRESSION = "GA_EXPRESSION"  # models/expression/batch.ExpressionBatch
EXPRESSION_ESTIMATOR = "GA_EXPRESSION_ESTIMATOR"  # models/expression/expression_estimator.ExpressionEstimator
EXPRESSION_NETWORK = "GA_EXPRESSION_NETWORK"  # models/expression/expression_network.ExpressionNetwork
EXPRESSION_MAPPING = "GA_EXPRESSION_MAPPING"  # models/expression/expression_mapping.ExpressionMapping
EXPRESSION_ADAPTER = "GA_EXPRESSION_ADAPTER"  # models/generation/expression_adapter.ExpressionAdapter
REFERENCE_ADAPTER = "GA_REFERENCE_ADAPTER"  # models/generation/reference_adapter.ReferenceLora
DIT_ADAPTER = "GA_DIT_ADAPTER"  # models/generation/dit_adapter.DiTAdapter
SAMPLING_GUARD = "GA_SAMPLING_GUARD"  # nodes/sampling/guard.SamplingGuard
SHEET_JOB = "GA_SHEET_JOB"  # models/evaluation/guard_report.SheetJob
FACES = "GA_FACES"  # models/face/face_listing.FaceListing
FACE_CROPS = "GA_FACE_CROPS"  # models/face/face_crops.FaceCrops
