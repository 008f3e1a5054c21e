"""One colour and one name per LayerNorm placement, the same on every chart that compares the two."""
ARCH_COLORS = {"pre-ln": "#1f77b4", "post-ln": "#d62728"}
ARCH_NAMES = {"pre-ln": "pre-LN", "post-ln": "post-LN"}
