"""Names of the model options, importable without torch (the command line's choices)."""

__all__ = ["THRESHOLDS", "STATISTICS", "GRADIENTS", "PRELUS"]

#: Threshold variants (DESIGN.md section 3).
THRESHOLDS = ("none", "rsign", "th", "th+")
#: Per-image, per-channel statistics a threshold or INSTA-PReLU may use.
STATISTICS = ("m1", "m2", "m3", "var", "skew")
#: Gradients of the binary activation.
GRADIENTS = ("ste", "approx")
#: Activation after the residual add.
PRELUS = ("rprelu", "insta")
