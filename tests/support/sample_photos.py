"""What the tests know about the public-domain photos they use (scikit-image's sample data, no download)."""

import numpy as np

# skimage.data.astronaut(): the subject's right eye, left eye, nose tip, right and left mouth corners (image x, y),
# read off the image by hand.
ASTRONAUT_KEYPOINTS = np.array([[203, 100], [246, 103], [225, 123], [205, 142], [241, 143]], dtype=np.float32)
