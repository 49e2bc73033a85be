"""Face restoration (A1111's "Restore faces"), written in the project because facexlib, gfpgan
and basicsr need torchvision:

* `detection.py`: facexlib's RetinaFace detector (faces and five landmarks);
* `gfpgan.py`, `codeformer.py`: the two restorer networks A1111 offers;
* `restoration.py`: align each face to the FFHQ template, restore it, blend it back.

Every module reads real files (`detection_Resnet50_Final.pth`, `GFPGANv1.4.pth`,
`codeformer-v0.1.0.pth`) weights-only, and writes tiny random-weight ones for tests.
"""


class FaceRestorerError(ValueError):
    """The file is not a face restoration model this platform can run (the message says why)."""
