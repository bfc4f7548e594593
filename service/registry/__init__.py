"""What is served: the model repository on disk, model configs, loaded versions and the registry."""
