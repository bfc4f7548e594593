"""The style-transfer kind: a feed-forward network that restyles photos (image to image), trained against a random
feature net (no pretrained weights), judged on held-out photos and published with its style image."""
