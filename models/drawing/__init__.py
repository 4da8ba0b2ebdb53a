"""Pictures: detections, previews, charts, sheets and the face model drawn from blendshapes."""
