"""Human annotation in Label Studio: a local server, the labeling config, a fast brush RLE
codec, pushing tasks with prefilled regions, syncing annotations back, simulated annotators."""
