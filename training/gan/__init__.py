"""The GAN kind: a DCGAN, unconditional or class-conditional, making 8 x 8 digits upsampled in the graph, whose
checkpoint and report card are chosen and written by a published classifier (the judge)."""
