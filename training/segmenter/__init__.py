"""The segmenter kind: a small U-Net with in-graph boxes (a CenterNet-style centre heatmap), trained on scenes of
digits or a user's mask folder, judged on held-out scenes and refused below its floors."""
