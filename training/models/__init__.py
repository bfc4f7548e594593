"""PyTorch model definitions: the CNN classifier and the (conditional) DCGAN."""
