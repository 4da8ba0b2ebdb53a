"""Face stage: find faces (insightface), choose among them, ArcFace identity, FFHQ alignment."""
