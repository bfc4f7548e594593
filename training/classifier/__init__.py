"""The classifier kind: a configurable CNN trained on digits or a class folder, published with its input
normalisation in the graph, every conv block's maps as optional outputs and a neuron atlas; the source of the
quantised variants (variants/)."""
