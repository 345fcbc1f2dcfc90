"""Math shared by several methods (clipping, the ViM subspace, Gaussians, neighbours, ...).

Nothing here is registered: each method lives in ``oodbench/methods/<name>.py``.
"""
