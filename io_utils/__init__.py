"""Input and output: the video list, decoding and sampling, checkpoints, writing results."""
